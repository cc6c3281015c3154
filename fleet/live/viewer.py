"""One WebSocket viewer: a bounded, coalescing send queue and the task that drains it into the socket.

The hub never waits for a viewer: it offers a message and moves on. A message has a key: messages that only
matter in their newest version (a vehicle's position on the fleet stream, its status, its latest values) share
a key per vehicle, and a newer one replaces the one still waiting, in place; others (events, alarms, errors)
get a key of their own. A queue holds at most `limit` messages; past that the oldest goes. Both count as
drops (`fleet_ws_dropped_total`), so a slow client gets the newest values and costs bounded memory, while a
fast one gets everything. The queue drains through the socket's own flow control: the send waits while the
client does not read.

A batched viewer (`/ws/fleet?batch=1`) keeps positions apart, one per vehicle (the newest), and the hub turns
them into one `positions` message every `LIVE_FLEET_BATCH_SEC`: a browser then handles a few messages a second
instead of one per vehicle movement.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import TYPE_CHECKING

from starlette.websockets import WebSocketDisconnect

from fleet.live import metrics

if TYPE_CHECKING:
    from fleet.live.access import Identity

SendText = Callable[[str], Awaitable[None]]
Close = Callable[[int, str], Awaitable[None]]
# How long a closing viewer's last messages (the error) may take to go out before the socket is closed anyway.
CLOSE_GRACE_SEC = 5.0
BATCH_KEY = ("positions",)


class Viewer:
    """A connected client of one stream (`vehicle` or `fleet`)."""

    __slots__ = (
        "_batch",
        "_close",
        "_queue",
        "_send",
        "_task",
        "_wake",
        "batched",
        "close_code",
        "close_reason",
        "dropped",
        "identity",
        "last_sent",
        "limit",
        "sent",
        "stream",
        "vehicle_id",
    )

    def __init__(
        self,
        stream: str,
        identity: Identity,
        send_text: SendText,
        close: Close,
        *,
        limit: int,
        vehicle_id: int | None = None,
        batched: bool = False,
    ) -> None:
        self.stream = stream
        self.batched = batched  # positions collected and sent together (`positions` messages)
        self.identity = identity
        self.vehicle_id = vehicle_id
        self.limit = limit
        self.dropped = 0
        self.sent = 0
        self.last_sent = time.monotonic()
        self.close_code: int | None = None
        self.close_reason = ""
        self._send = send_text
        self._close = close
        self._queue: OrderedDict[Hashable, str] = OrderedDict()
        self._batch: dict[int, str] = {}  # vehicle id → its newest position, for a batched viewer
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # --- the hub's side ---------------------------------------------------------------------------------------
    def offer(self, key: Hashable, text: str) -> None:
        """Queue a message (never blocks); a waiting message with the same key is replaced in place."""
        if self.close_code is not None:
            return
        queue = self._queue
        if key in queue:
            queue[key] = text
            self._drop(1)
            return
        if len(queue) >= self.limit:
            queue.popitem(last=False)
            self._drop(1)
        queue[key] = text
        if len(queue) == 1:
            self._wake.set()

    def offer_position(self, vehicle_id: int, key: Hashable, text: str) -> None:
        """A vehicle's position: queued on its own, or kept for the next `positions` batch."""
        if not self.batched:
            self.offer(key, text)
            return
        if vehicle_id in self._batch:
            self._drop(1)
        self._batch[vehicle_id] = text

    def flush_batch(self) -> int:
        """Queue the collected positions as one `positions` message; the count sent (0: none, or the previous
        batch has not gone out yet — a slow client's positions keep coalescing per vehicle meanwhile)."""
        if not self._batch or self.close_code is not None or BATCH_KEY in self._queue:
            return 0
        items, self._batch = self._batch, {}
        self.offer(BATCH_KEY, '{"type":"positions","items":[' + ",".join(items.values()) + "]}")
        return len(items)

    def end(self, code: int, error_text: str | None, reason: str = "") -> None:
        """Send `error_text` (what is still queued is dropped), then close the socket with `code`."""
        if self.close_code is not None:
            return
        self._drop(len(self._queue))
        self._queue.clear()
        if error_text is not None:
            self._queue[object()] = error_text
        self.close_code = code
        self.close_reason = reason
        self._wake.set()

    @property
    def queued(self) -> int:
        return len(self._queue)

    def _drop(self, count: int) -> None:
        if count:
            self.dropped += count
            metrics.DROP_COUNTERS[self.stream].inc(count)

    # --- the socket's side -------------------------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._pump(), name=f"ws-{self.stream}-send")

    async def stop(self) -> None:
        """Stop sending (the client went away)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    async def _pump(self) -> None:
        queue = self._queue
        wake = self._wake
        send = self._send
        try:
            while True:
                if not queue:
                    if self.close_code is not None:
                        break
                    wake.clear()
                    await wake.wait()
                    continue
                _, text = queue.popitem(last=False)
                if self.close_code is not None:
                    # The last words of a closing viewer must not wait forever for a client that does not read.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(send(text), CLOSE_GRACE_SEC)
                    continue
                await send(text)
                self.sent += 1
                self.last_sent = time.monotonic()
            await self._close(self.close_code, self.close_reason)
        except (OSError, RuntimeError, WebSocketDisconnect):
            # The client is gone (uvicorn's ClientDisconnected is an OSError, Starlette's "closed" states are
            # RuntimeErrors): the endpoint's receive loop notices and removes the viewer.
            return
