"""Channel definitions: what /channels reports and what the simulator produces."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Channel:
    """One measured quantity of the vehicle, with its physical range."""

    channel_id: int
    name: str
    unit: str
    phys_min: float
    phys_max: float

    def as_json(self) -> dict[str, object]:
        """Return the /channels entry for this channel."""
        return {
            "channel_id": self.channel_id,
            "name": self.name,
            "unit": self.unit,
            "phys_min": self.phys_min,
            "phys_max": self.phys_max,
        }


# The simulated vehicle is a 24 V diesel truck with a 12-speed gearbox, air brakes and SCR (AdBlue).
# Channel ids are stable: a server keys measurements by (vehicle, channel_id), so never renumber them.
VEHICLE_CHANNELS: tuple[Channel, ...] = (
    Channel(1, "speed", "km/h", 0, 140),
    Channel(2, "engine_rpm", "rpm", 0, 3000),
    Channel(3, "coolant_temp", "°C", -40, 130),
    Channel(4, "fuel_level", "%", 0, 100),
    Channel(5, "battery_voltage", "V", 0, 32),
    Channel(6, "oil_pressure", "kPa", 0, 800),
    Channel(7, "engine_load", "%", 0, 100),
    Channel(8, "throttle_position", "%", 0, 100),
    Channel(9, "intake_air_temp", "°C", -40, 120),
    Channel(10, "ambient_temp", "°C", -40, 60),
    Channel(11, "odometer", "km", 0, 5_000_000),
    Channel(12, "engine_hours", "h", 0, 200_000),
    Channel(13, "gear", "", 0, 12),
    Channel(14, "brake_pressure", "kPa", 0, 1000),
    Channel(15, "adblue_level", "%", 0, 100),
    Channel(16, "latitude", "°", -90, 90),
    Channel(17, "longitude", "°", -180, 180),
    Channel(18, "heading", "°", 0, 360),
    Channel(19, "altitude", "m", -500, 9000),
    Channel(20, "gps_satellites", "", 0, 32),
    Channel(21, "cabin_temp", "°C", -40, 80),
    Channel(22, "tyre_pressure_front_left", "kPa", 0, 1200),
    Channel(23, "tyre_pressure_front_right", "kPa", 0, 1200),
    Channel(24, "tyre_pressure_rear_left", "kPa", 0, 1200),
    Channel(25, "tyre_pressure_rear_right", "kPa", 0, 1200),
)


def simulated_channels(count: int) -> tuple[Channel, ...]:
    """Return the first ``count`` vehicle channels, extended with generic auxiliary inputs beyond 25."""
    if count <= len(VEHICLE_CHANNELS):
        return VEHICLE_CHANNELS[:count]
    extra = tuple(
        Channel(channel_id, f"aux_{channel_id}", "V", 0, 10)
        for channel_id in range(len(VEHICLE_CHANNELS) + 1, count + 1)
    )
    return VEHICLE_CHANNELS + extra
