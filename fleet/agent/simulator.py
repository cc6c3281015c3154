"""A deterministic model of a diesel truck that produces the agent's channels and alarms.

The truck drives cycles (parked, idle, accelerate, cruise, brake to a stop) and every channel is derived from
one physical state, so values agree with each other: rpm follows speed and gear, fuel falls with engine load
and rises at a refuelling stop, coolant warms while the engine runs, position integrates speed and heading.
Now and then a fault episode (a failed radiator fan, a failed alternator, a slow tyre leak) drives a channel
over a threshold, which raises an alarm that resolves when the value recovers.

Everything random comes from one ``random.Random(seed)``, and time comes only from the tick counter, so the
same seed, start time and rate produce the same rows and alarms, bit for bit.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum

from fleet.agent.alarm_rules import ALARM_RULES, AlarmTracker
from fleet.agent.channels import Channel
from fleet.agent.store import Alarm, Sample

# Gear top speeds (km/h) of the 12-speed box; the engine reaches GOVERNED_RPM at a gear's top speed.
GEAR_TOP_KMH = (8, 14, 20, 27, 35, 44, 53, 62, 72, 82, 95, 140)
IDLE_RPM = 650.0
GOVERNED_RPM = 1900.0
TANK_LITRES = 400.0
ADBLUE_LITRES = 60.0

# Per-second probabilities of fault episodes, chosen so a vehicle shows a few alarms per operating hour.
P_FAN_FAILURE = 1 / 4000
P_ALTERNATOR_FAILURE = 1 / 5000
P_TYRE_LEAK = 1 / 5000


class Phase(Enum):
    """Where the truck is in its drive cycle."""

    PARKED = "parked"  # engine off
    IDLE = "idle"  # engine on, standing
    ACCELERATE = "accelerate"
    CRUISE = "cruise"
    BRAKE = "brake"


@dataclass(frozen=True, slots=True)
class Tick:
    """What one simulation step produced: samples at one time, and alarms raised or resolved at it."""

    time_ms: int
    samples: list[Sample]
    alarms: list[Alarm]


@dataclass(slots=True)
class TruckState:
    """The physical state every channel is derived from."""

    phase: Phase = Phase.PARKED
    phase_left_s: float = 60.0
    speed_kmh: float = 0.0
    target_kmh: float = 0.0
    gear: int = 0
    rpm: float = 0.0
    throttle: float = 0.0
    load: float = 0.0
    brake_kpa: float = 0.0
    coolant_c: float = 20.0
    oil_kpa: float = 0.0
    battery_v: float = 25.2
    fuel_pct: float = 60.0
    adblue_pct: float = 70.0
    refuelling: bool = False
    ambient_base_c: float = 15.0
    ambient_c: float = 15.0
    intake_c: float = 15.0
    cabin_c: float = 15.0
    odometer_km: float = 250_000.0
    engine_hours: float = 9_000.0
    latitude: float = 50.45
    longitude: float = 30.52
    heading_deg: float = 90.0
    turn_rate_dps: float = 0.0
    altitude_m: float = 170.0
    home_altitude_m: float = 170.0
    grade: float = 0.0
    satellites: int = 11
    # Pressure a tyre is inflated to, its cold pressure now (a leak lowers it), and the measured (warm) one.
    tyres_nominal_kpa: list[float] = field(default_factory=lambda: [800.0, 800.0, 820.0, 820.0])
    tyres_cold_kpa: list[float] = field(default_factory=lambda: [800.0, 800.0, 820.0, 820.0])
    tyres_kpa: list[float] = field(default_factory=lambda: [800.0, 800.0, 820.0, 820.0])
    fan_failure_s: float = 0.0
    alternator_failure_s: float = 0.0
    leaking_tyre: int | None = None

    @property
    def engine_on(self) -> bool:
        """The engine runs in every phase but PARKED."""
        return self.phase is not Phase.PARKED


class VehicleSimulator:
    """Produce ticks of a simulated truck at ``rate_hz`` from ``start_ms`` on."""

    def __init__(self, channels: Sequence[Channel], *, seed: int, start_ms: int, rate_hz: float) -> None:
        self.seed = seed
        self.channels = tuple(channels)
        self._exported = {c.channel_id for c in self.channels}
        self._rng = random.Random(seed)
        # Auxiliary inputs draw from their own generator, so adding channels never changes the truck.
        self._aux_rng = random.Random(f"aux-{seed}")
        self._start_ms = start_ms
        self._rate_hz = rate_hz
        self._dt = 1.0 / rate_hz
        self._tick = 0
        self._elapsed_s = 0.0
        self._state = self._initial_state()
        self._alarms = AlarmTracker(rule for rule in ALARM_RULES if rule.channel_id in self._exported)
        self._readers = self._channel_readers()

    @property
    def next_time_ms(self) -> int:
        """Time of the tick that :meth:`step` produces next."""
        return self._time_of(self._tick)

    def step(self) -> Tick:
        """Advance the model by one tick and return its samples and alarm changes."""
        time_ms = self._time_of(self._tick)
        self._tick += 1
        self._advance(self._dt)
        self._elapsed_s += self._dt
        samples = [Sample(cid, time_ms, read()) for cid, read in self._readers]
        return Tick(time_ms, samples, self._alarms.evaluate(time_ms, samples))

    def skip_to(self, time_ms: int) -> None:
        """Move the next tick to the first tick time at or after ``time_ms``, producing none in between.

        The physical state stays as it was, as if the logger had been switched off: a gap, not made-up data.
        """
        if time_ms <= self.next_time_ms:
            return
        tick = max(self._tick, math.floor((time_ms - self._start_ms) * self._rate_hz / 1000))
        while self._time_of(tick) < time_ms:
            tick += 1
        self._tick = tick

    def _time_of(self, tick: int) -> int:
        return self._start_ms + round(tick * 1000 / self._rate_hz)

    # -- model ------------------------------------------------------------------------------------------

    def _initial_state(self) -> TruckState:
        rng = self._rng
        state = TruckState()
        state.fuel_pct = rng.uniform(18.0, 90.0)
        state.adblue_pct = rng.uniform(30.0, 95.0)
        state.ambient_base_c = rng.uniform(-5.0, 30.0)
        state.ambient_c = state.intake_c = state.cabin_c = state.coolant_c = state.ambient_base_c
        state.odometer_km = rng.uniform(50_000.0, 900_000.0)
        state.engine_hours = state.odometer_km / rng.uniform(45.0, 60.0)
        state.latitude = 50.45 + rng.uniform(-1.5, 1.5)
        state.longitude = 30.52 + rng.uniform(-3.0, 3.0)
        state.heading_deg = rng.uniform(0.0, 360.0)
        state.altitude_m = state.home_altitude_m = rng.uniform(100.0, 300.0)
        nominal = [rng.uniform(790.0, 810.0), rng.uniform(790.0, 810.0)] + [rng.uniform(810.0, 830.0)] * 2
        state.tyres_nominal_kpa = nominal
        state.tyres_cold_kpa = list(nominal)
        state.tyres_kpa = list(nominal)
        state.phase_left_s = rng.uniform(5.0, 60.0)
        return state

    def _advance(self, dt: float) -> None:
        s = self._state
        self._advance_phase(s, dt)
        self._advance_motion(s, dt)
        self._advance_engine(s, dt)
        self._advance_consumables(s, dt)
        self._advance_environment(s, dt)
        self._advance_position(s, dt)
        self._advance_faults(s, dt)

    def _advance_phase(self, s: TruckState, dt: float) -> None:
        rng = self._rng
        s.phase_left_s -= dt
        if s.phase is Phase.ACCELERATE and s.speed_kmh >= s.target_kmh - 1.0:
            self._enter(s, Phase.CRUISE, rng.uniform(60.0, 600.0))
        elif s.phase is Phase.BRAKE and s.speed_kmh <= 0.0:
            # Park at some stops, and always when the tank runs low (a filling station) or a leaking tyre has
            # fallen far enough for the driver to notice.
            leaking = s.leaking_tyre is not None and s.tyres_kpa[s.leaking_tyre] < 700.0
            if s.fuel_pct < 15.0 or leaking or rng.random() < 0.08:
                self._enter(s, Phase.PARKED, rng.uniform(120.0, 900.0))
                s.refuelling = s.fuel_pct < 30.0
            else:
                self._enter(s, Phase.IDLE, rng.uniform(5.0, 90.0))
        elif s.phase_left_s <= 0.0:
            if s.phase is Phase.PARKED:
                if s.refuelling:  # stay until the tank is full
                    s.phase_left_s = 10.0
                else:
                    self._enter(s, Phase.IDLE, rng.uniform(20.0, 120.0))
            elif s.phase is Phase.IDLE:
                s.target_kmh = self._pick_target()
                self._enter(s, Phase.ACCELERATE, 600.0)
                s.heading_deg = (s.heading_deg + rng.choice((-90.0, 0.0, 0.0, 90.0))) % 360.0
            elif s.phase is Phase.CRUISE:
                self._enter(s, Phase.BRAKE, 600.0)
        if s.phase is Phase.CRUISE and rng.random() < dt / 90.0:
            s.target_kmh = self._pick_target()

    def _enter(self, s: TruckState, phase: Phase, duration_s: float) -> None:
        s.phase = phase
        s.phase_left_s = duration_s

    def _pick_target(self) -> float:
        # Mostly town and country roads; now and then a motorway stretch tempts the driver over 90 km/h.
        if self._rng.random() < 0.06:
            return 94.0
        return self._rng.choice((30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 85.0))

    def _advance_motion(self, s: TruckState, dt: float) -> None:
        rng = self._rng
        if s.phase is Phase.ACCELERATE:
            accel = 3.2 * (1.0 - 0.6 * s.speed_kmh / max(s.target_kmh, 1.0)) - 8.0 * s.grade
            s.speed_kmh = min(s.target_kmh, s.speed_kmh + max(accel, 0.4) * dt)
            s.throttle = min(100.0, 65.0 + 25.0 * rng.random() + 300.0 * s.grade)
            s.brake_kpa = 0.0
        elif s.phase is Phase.CRUISE:
            s.speed_kmh += (0.15 * (s.target_kmh - s.speed_kmh) + rng.gauss(0.0, 0.6)) * dt
            s.speed_kmh = max(s.speed_kmh, 5.0)
            cruise_throttle = 12.0 + 0.38 * s.speed_kmh + 250.0 * s.grade + rng.gauss(0.0, 2.0)
            s.throttle = min(100.0, max(0.0, cruise_throttle))
            s.brake_kpa = 0.0
        elif s.phase is Phase.BRAKE:
            s.speed_kmh = max(0.0, s.speed_kmh - rng.uniform(3.0, 5.0) * dt)
            s.throttle = 0.0
            s.brake_kpa = rng.uniform(180.0, 420.0) if s.speed_kmh > 0.0 else 0.0
        else:
            s.speed_kmh = 0.0
            s.throttle = 0.0
            s.brake_kpa = 0.0
        if s.speed_kmh <= 0.0:
            s.gear = 0
        else:
            s.gear = next(g for g, top in enumerate(GEAR_TOP_KMH, start=1) if s.speed_kmh <= top)

    def _advance_engine(self, s: TruckState, dt: float) -> None:
        rng = self._rng
        if not s.engine_on:
            s.rpm = s.load = s.oil_kpa = 0.0
            s.coolant_c += (s.ambient_c - s.coolant_c) * dt / 2400.0
            return
        if s.gear == 0:
            s.rpm = IDLE_RPM + rng.gauss(0.0, 8.0)
        else:
            geared_rpm = GOVERNED_RPM * s.speed_kmh / GEAR_TOP_KMH[s.gear - 1]
            s.rpm = max(IDLE_RPM, geared_rpm) + rng.gauss(0.0, 12.0)
        s.load = min(100.0, max(8.0, 0.82 * s.throttle + 10.0 + rng.gauss(0.0, 1.5)))
        # Thermostat holds ~88 °C; a failed radiator fan lets the engine run hot under load.
        target = 86.0 + 0.06 * s.load + (28.0 + 0.12 * s.load if s.fan_failure_s > 0.0 else 0.0)
        s.coolant_c += (target - s.coolant_c) * dt / 300.0 + rng.gauss(0.0, 0.03)
        s.oil_kpa = max(0.0, 90.0 + 0.2 * s.rpm - 1.2 * max(0.0, s.coolant_c - 90.0) + rng.gauss(0.0, 4.0))
        s.engine_hours += dt / 3600.0

    def _advance_consumables(self, s: TruckState, dt: float) -> None:
        if s.engine_on:
            litres_per_hour = 2.2 + 0.36 * s.load
            litres = litres_per_hour * dt / 3600.0
            s.fuel_pct = max(0.0, s.fuel_pct - litres / TANK_LITRES * 100.0)
            # SCR dosing uses about 5 % of the diesel volume in AdBlue.
            s.adblue_pct = max(0.0, s.adblue_pct - 0.05 * litres / ADBLUE_LITRES * 100.0)
        elif s.refuelling:
            # A 40 L/min pump: about 10 %/min of the 400 L tank; AdBlue is topped up at the same stop.
            s.fuel_pct = min(96.0, s.fuel_pct + 40.0 / 60.0 * dt / TANK_LITRES * 100.0)
            s.adblue_pct = max(s.adblue_pct, 95.0)
            if s.fuel_pct >= 96.0:
                s.refuelling = False
                s.phase_left_s = min(s.phase_left_s, 60.0)
        if s.alternator_failure_s > 0.0:
            # No charging: the batteries fall to their resting voltage, then drain under the electrical load.
            if s.battery_v > 25.0:
                s.battery_v += (25.0 - s.battery_v) * min(1.0, dt / 20.0)
            else:
                s.battery_v -= (0.002 if s.engine_on else 0.0005) * dt
        elif s.engine_on:
            s.battery_v += (27.7 - s.battery_v) * min(1.0, dt / 30.0)
        else:
            s.battery_v += (25.2 - s.battery_v) * min(1.0, dt / 600.0)
        s.battery_v = max(21.0, s.battery_v + self._rng.gauss(0.0, 0.01))

    def _advance_environment(self, s: TruckState, dt: float) -> None:
        rng = self._rng
        # A slow day-like swing plus weather noise.
        s.ambient_c = s.ambient_base_c + 4.0 * math.sin(2 * math.pi * self._elapsed_s / 21_600.0)
        s.ambient_c += rng.gauss(0.0, 0.05)
        soak = 12.0 if s.engine_on and s.speed_kmh < 10.0 else 4.0
        intake_target = s.ambient_c + (soak + 0.05 * s.load if s.engine_on else 0.0)
        s.intake_c += (intake_target - s.intake_c) * dt / 60.0
        cabin_target = 21.0 if s.engine_on else s.ambient_c
        s.cabin_c += (cabin_target - s.cabin_c) * dt / (400.0 if s.engine_on else 1800.0)
        if rng.random() < dt / 45.0:
            s.satellites = min(16, max(4, s.satellites + rng.choice((-1, 1))))
        for i, cold in enumerate(s.tyres_cold_kpa):
            # Tyres warm up with speed, which raises pressure by a few percent.
            hot = cold * (1.0 + 0.0006 * s.speed_kmh)
            s.tyres_kpa[i] += (hot - s.tyres_kpa[i]) * dt / 900.0

    def _advance_position(self, s: TruckState, dt: float) -> None:
        rng = self._rng
        if s.speed_kmh > 0.0:
            s.turn_rate_dps += (rng.gauss(0.0, 0.6) - 0.1 * s.turn_rate_dps) * dt
            s.heading_deg = (s.heading_deg + s.turn_rate_dps * dt) % 360.0
            metres = s.speed_kmh / 3.6 * dt
            heading = math.radians(s.heading_deg)
            s.latitude += metres * math.cos(heading) / 111_320.0
            s.longitude += metres * math.sin(heading) / (111_320.0 * math.cos(math.radians(s.latitude)))
            s.odometer_km += metres / 1000.0
            # The road's grade wanders but leans back towards the home altitude, so altitude cannot drift off.
            lean = (s.home_altitude_m - s.altitude_m) * 0.00002
            s.grade += (rng.gauss(0.0, 0.002) + 0.02 * (lean - s.grade)) * dt
            s.grade = max(-0.06, min(0.06, s.grade))
            s.altitude_m = max(-50.0, s.altitude_m + metres * s.grade)

    def _advance_faults(self, s: TruckState, dt: float) -> None:
        rng = self._rng
        s.fan_failure_s = max(0.0, s.fan_failure_s - dt)
        s.alternator_failure_s = max(0.0, s.alternator_failure_s - dt)
        if s.engine_on and s.fan_failure_s == 0.0 and rng.random() < P_FAN_FAILURE * dt:
            s.fan_failure_s = rng.uniform(600.0, 1500.0)
        if s.engine_on and s.alternator_failure_s == 0.0 and rng.random() < P_ALTERNATOR_FAILURE * dt:
            s.alternator_failure_s = rng.uniform(900.0, 1800.0)
        if s.leaking_tyre is None and s.speed_kmh > 0.0 and rng.random() < P_TYRE_LEAK * dt:
            s.leaking_tyre = rng.randrange(4)
        if s.leaking_tyre is not None:
            i = s.leaking_tyre
            if s.phase is Phase.PARKED:
                # The driver reinflates it at the next long stop.
                s.tyres_cold_kpa[i] = min(s.tyres_cold_kpa[i] + 20.0 * dt, s.tyres_nominal_kpa[i])
                s.tyres_kpa[i] = max(s.tyres_kpa[i], s.tyres_cold_kpa[i])
                if s.tyres_cold_kpa[i] >= s.tyres_nominal_kpa[i]:
                    s.leaking_tyre = None
            else:
                lost = min(0.15 * dt, s.tyres_cold_kpa[i] - 350.0)
                s.tyres_cold_kpa[i] -= lost
                s.tyres_kpa[i] -= lost

    # -- outputs ----------------------------------------------------------------------------------------

    def _channel_readers(self) -> list[tuple[int, Callable[[], float]]]:
        s = self._state
        named: dict[str, Callable[[], float]] = {
            "speed": lambda: round(s.speed_kmh, 1),
            "engine_rpm": lambda: float(round(s.rpm)),
            "coolant_temp": lambda: round(s.coolant_c, 1),
            "fuel_level": lambda: round(s.fuel_pct, 2),
            "battery_voltage": lambda: round(s.battery_v, 2),
            "oil_pressure": lambda: float(round(s.oil_kpa)),
            "engine_load": lambda: round(s.load, 1),
            "throttle_position": lambda: round(s.throttle, 1),
            "intake_air_temp": lambda: round(s.intake_c, 1),
            "ambient_temp": lambda: round(s.ambient_c, 1),
            "odometer": lambda: round(s.odometer_km, 3),
            "engine_hours": lambda: round(s.engine_hours, 3),
            "gear": lambda: float(s.gear),
            "brake_pressure": lambda: float(round(s.brake_kpa)),
            "adblue_level": lambda: round(s.adblue_pct, 2),
            "latitude": lambda: round(s.latitude, 6),
            "longitude": lambda: round(s.longitude, 6),
            "heading": lambda: round(s.heading_deg, 1),
            "altitude": lambda: round(s.altitude_m, 1),
            "gps_satellites": lambda: float(s.satellites),
            "cabin_temp": lambda: round(s.cabin_c, 1),
            "tyre_pressure_front_left": lambda: float(round(s.tyres_kpa[0])),
            "tyre_pressure_front_right": lambda: float(round(s.tyres_kpa[1])),
            "tyre_pressure_rear_left": lambda: float(round(s.tyres_kpa[2])),
            "tyre_pressure_rear_right": lambda: float(round(s.tyres_kpa[3])),
        }
        readers: list[tuple[int, Callable[[], float]]] = []
        for channel in self.channels:
            reader = named.get(channel.name) or self._aux_reader(channel)
            readers.append((channel.channel_id, reader))
        return readers

    def _aux_reader(self, channel: Channel) -> Callable[[], float]:
        # A generic analogue input: a slow sine across the channel's range with a little noise.
        rng = self._aux_rng
        period_s = rng.uniform(120.0, 1200.0)
        phase = rng.uniform(0.0, 2 * math.pi)
        mid = (channel.phys_min + channel.phys_max) / 2
        amplitude = (channel.phys_max - channel.phys_min) * 0.4

        def read() -> float:
            wave = math.sin(2 * math.pi * self._elapsed_s / period_s + phase)
            return round(mid + amplitude * wave + rng.gauss(0.0, amplitude * 0.01), 3)

        return read
