"""The live view: WebSocket streams of vehicles and of the fleet (docs/LIVE.md).

Modules, one concept each:

* `routes`   — `WS /ws/vehicles/{id}/live`, `WS /ws/fleet` and `GET /vehicles/latest-positions`;
* `session`  — one connection from accept to close: the token, access, the first message, client messages;
* `access`   — authentication like a REST request, and the periodic re-check of an account's access;
* `hub`      — one per API process: the bus subscriptions, routing to viewers, the tick, the status sweep;
* `fleet`    — the fleet stream's routing by account and vehicle, and its per-vehicle coalescing;
* `viewer`   — one viewer's bounded, coalescing send queue and the task that drains it;
* `status`   — the status rule's facts per vehicle and their changes;
* `poller`   — one `/data/latest` poller per watched pull vehicle, shared by its viewers;
* `messages` — the JSON messages, built once per event;
* `metrics`, `cli` — Prometheus metrics; `fleet vehicle gps`.
"""
