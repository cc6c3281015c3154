"""Threshold alarms of the simulated truck: the rules, their stable ids, and the raise/resolve tracking."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from fleet.agent.store import Alarm, AlarmLevel, Sample


@dataclass(frozen=True, slots=True)
class AlarmRule:
    """Raise an alarm when a channel crosses ``raise_at``; resolve it when it crosses back past ``clear_at``.

    The gap between the two thresholds is hysteresis, so a value hovering at the limit raises one alarm, not a
    stream of them.
    """

    channel_id: int
    level: AlarmLevel
    message: str
    above: bool
    raise_at: float
    clear_at: float

    def crossed(self, value: float) -> bool:
        """Return True when ``value`` should raise the alarm."""
        return value > self.raise_at if self.above else value < self.raise_at

    def cleared(self, value: float) -> bool:
        """Return True when ``value`` should resolve the raised alarm."""
        return value < self.clear_at if self.above else value > self.clear_at


ALARM_RULES: tuple[AlarmRule, ...] = (
    AlarmRule(1, "info", "Speed above 90 km/h", True, 90.0, 85.0),
    AlarmRule(3, "critical", "Coolant temperature above 105 °C", True, 105.0, 100.0),
    AlarmRule(4, "warning", "Fuel level below 15 %", False, 15.0, 20.0),
    AlarmRule(5, "warning", "Battery voltage below 23.5 V", False, 23.5, 24.5),
    AlarmRule(22, "warning", "Front left tyre pressure below 700 kPa", False, 700.0, 760.0),
    AlarmRule(23, "warning", "Front right tyre pressure below 700 kPa", False, 700.0, 760.0),
    AlarmRule(24, "warning", "Rear left tyre pressure below 700 kPa", False, 700.0, 760.0),
    AlarmRule(25, "warning", "Rear right tyre pressure below 700 kPa", False, 700.0, 760.0),
)


def alarm_id_for(raised_at_ms: int, channel_id: int) -> int:
    """Return the id of an alarm raised on ``channel_id`` at ``raised_at_ms``.

    A channel has at most one open alarm, so (time, channel) is unique, and because the id is built from the
    time it stays unique across agent restarts and a wiped database, as the server's UNIQUE (vehicle_id,
    alarm_id) needs. Ids fit a signed BIGINT for every time the contract can express, and stay below 2**53
    (exact in a JSON double) for alarms raised before the year 2255.
    """
    return raised_at_ms * 1000 + channel_id % 1000


class AlarmTracker:
    """Apply rules to successive ticks, holding each channel's open alarm until its value recovers."""

    def __init__(self, rules: Iterable[AlarmRule]) -> None:
        self.rules = tuple(rules)
        self._open: dict[int, Alarm] = {}

    def evaluate(self, time_ms: int, samples: Iterable[Sample]) -> list[Alarm]:
        """Return the alarms raised or resolved by the samples of one tick."""
        values = {sample.channel_id: sample.value for sample in samples}
        changes: list[Alarm] = []
        for rule in self.rules:
            value = values[rule.channel_id]
            opened = self._open.get(rule.channel_id)
            if opened is None and rule.crossed(value):
                alarm = Alarm(
                    alarm_id=alarm_id_for(time_ms, rule.channel_id),
                    channel_id=rule.channel_id,
                    level=rule.level,
                    message=rule.message,
                    raised_at=time_ms,
                )
                self._open[rule.channel_id] = alarm
                changes.append(alarm)
            elif opened is not None and rule.cleared(value):
                del self._open[rule.channel_id]
                changes.append(replace(opened, resolved_at=time_ms))
        return changes
