"""The simulated truck: deterministic, coherent, within range, with alarms that resolve."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from fleet.agent.alarm_rules import ALARM_RULES, alarm_id_for
from fleet.agent.channels import VEHICLE_CHANNELS, simulated_channels
from fleet.agent.simulator import Tick, VehicleSimulator

START = 1_700_000_000_000
BY_NAME = {c.name: c.channel_id for c in VEHICLE_CHANNELS}


def run(seed: int, seconds: int, *, channels: int = 25, rate_hz: float = 1.0) -> list[Tick]:
    sim = VehicleSimulator(simulated_channels(channels), seed=seed, start_ms=START, rate_hz=rate_hz)
    return [sim.step() for _ in range(int(seconds * rate_hz))]


@pytest.fixture(scope="module")
def three_hours() -> list[Tick]:
    return run(1, 3 * 3600)


def series(ticks: list[Tick], name: str) -> list[float]:
    channel_id = BY_NAME[name]
    return [next(s.value for s in t.samples if s.channel_id == channel_id) for t in ticks]


def frames(ticks: list[Tick]) -> Iterator[dict[str, float]]:
    names = {c.channel_id: c.name for c in VEHICLE_CHANNELS}
    for tick in ticks:
        yield {names[s.channel_id]: s.value for s in tick.samples}


def test_same_seed_same_data_other_seed_other_data() -> None:
    first, again, other = run(42, 600), run(42, 600), run(43, 600)
    assert first == again
    assert [t.samples for t in first] != [t.samples for t in other]


def test_ticks_follow_the_rate() -> None:
    ticks = run(1, 3, rate_hz=4.0)
    assert [t.time_ms - START for t in ticks] == [
        0,
        250,
        500,
        750,
        1000,
        1250,
        1500,
        1750,
        2000,
        2250,
        2500,
        2750,
    ]
    assert all(len(t.samples) == 25 and {s.time for s in t.samples} == {t.time_ms} for t in ticks)


def test_values_stay_within_channel_ranges(three_hours: list[Tick]) -> None:
    ranges = {c.channel_id: (c.phys_min, c.phys_max) for c in VEHICLE_CHANNELS}
    for tick in three_hours:
        for sample in tick.samples:
            low, high = ranges[sample.channel_id]
            assert low <= sample.value <= high, (sample, VEHICLE_CHANNELS[sample.channel_id - 1].name)


def test_channels_agree_with_each_other(three_hours: list[Tick]) -> None:
    moving = 0
    for frame in frames(three_hours):
        if frame["speed"] == 0.0:
            assert frame["gear"] == 0.0 and frame["throttle_position"] == 0.0
        else:
            moving += 1
            assert frame["gear"] >= 1.0 and frame["engine_rpm"] >= 600.0
        if frame["engine_rpm"] == 0.0:  # engine off: parked, no oil pressure, no load
            assert frame["speed"] == 0.0 and frame["oil_pressure"] == 0.0 and frame["engine_load"] == 0.0
    assert moving > len(three_hours) / 2  # a drive cycle, not a parked truck
    # Counters only grow; the odometer by about what the speed integrates to.
    odometer = series(three_hours, "odometer")
    assert all(b >= a for a, b in itertools.pairwise(odometer))
    travelled = sum(series(three_hours, "speed")) / 3600
    assert odometer[-1] - odometer[0] == pytest.approx(travelled, rel=0.02)
    hours = series(three_hours, "engine_hours")
    assert 0 < hours[-1] - hours[0] <= 3.0


def test_fuel_falls_while_driving_and_rises_only_when_refuelling(three_hours: list[Tick]) -> None:
    all_frames = list(frames(three_hours))
    for frame_before, frame_after in itertools.pairwise(all_frames):
        if frame_after["fuel_level"] > frame_before["fuel_level"]:
            assert frame_after["engine_rpm"] == 0.0  # refuelling happens with the engine off
    fuel = series(three_hours, "fuel_level")
    assert min(fuel) < fuel[0]
    assert max(fuel) > min(fuel) + 20  # seed 1 stops at a filling station within three hours


def test_alarms_are_raised_then_resolved_with_stable_ids(three_hours: list[Tick]) -> None:
    rules = {rule.channel_id: rule for rule in ALARM_RULES}
    raised: dict[int, int] = {}
    resolved: set[int] = set()
    for tick in three_hours:
        for alarm in tick.alarms:
            assert alarm.channel_id is not None
            if alarm.resolved_at is None:
                assert alarm.raised_at == tick.time_ms
                assert alarm.alarm_id == alarm_id_for(tick.time_ms, alarm.channel_id)
                assert alarm.level == rules[alarm.channel_id].level
                raised[alarm.alarm_id] = alarm.raised_at
            else:
                assert raised[alarm.alarm_id] == alarm.raised_at < alarm.resolved_at == tick.time_ms
                resolved.add(alarm.alarm_id)
    assert len(resolved) >= 3
    levels = {rules[a % 1000].level for a in resolved}
    assert {"info", "critical"} <= levels


def test_alarm_ids_fit_bigint_and_double() -> None:
    latest = 253_402_300_799_999
    assert alarm_id_for(latest, 999) < 2**63
    assert alarm_id_for(START, 25) < 2**53


def test_skip_to_leaves_a_gap_and_keeps_the_grid() -> None:
    sim = VehicleSimulator(simulated_channels(3), seed=1, start_ms=START, rate_hz=2.0)
    sim.step()
    sim.skip_to(START + 10_250)
    assert sim.next_time_ms == START + 10_500
    assert sim.step().time_ms == START + 10_500
    sim.skip_to(START)  # never backwards
    assert sim.next_time_ms == START + 11_000


def test_fewer_or_more_channels() -> None:
    few = run(3, 60, channels=4)
    assert {s.channel_id for s in few[0].samples} == {1, 2, 3, 4}
    many = run(3, 60, channels=30)
    aux = [s for t in many for s in t.samples if s.channel_id > 25]
    assert {s.channel_id for s in aux} == {26, 27, 28, 29, 30}
    assert all(0 <= s.value <= 10 for s in aux)
    # The truck itself does not change with the channel count.
    assert [t.samples[:4] for t in few] == [t.samples[:4] for t in many]
