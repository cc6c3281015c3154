"""The Teltonika AVL IO element table (FMBXXX family) as data: id → name, size, signedness, scale, unit.

Source: spec/teltonika.md §7 (Teltonika's "Data Sending Parameters ID" pages of the FMB/FMC/FMM family).
``docs/teltonika_io.md`` is generated from this table (``python -m fleet.protocol.teltonika.docgen``) and a
test keeps the two identical.

Rules a row follows: the wire value is the unsigned big-endian integer (or raw bytes for NX elements);
``signed`` reinterprets it as two's complement of the width it arrived with; ``scale`` multiplies it;
``missing`` raw values mean "no reading" (the attribute is then null and ``<name>_error`` holds the code);
``text`` NX elements are ASCII. ``can`` maps the element to a canonical CAN signal of docs/can.md (name,
unit, factor from the raw value); ``can_bits`` does so bit by bit. ``alarm`` marks eventual elements whose
records are device events (``events`` table) when they triggered the record.

IDs are family-specific: the FMx6 line reuses numbers for other quantities. This table is applied to
every Teltonika device; the raw frames are kept, so a device of another family can be decoded again
(``fleet redecode``) once its table exists.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["IO_ELEMENTS", "IoSpec"]


@dataclass(frozen=True, slots=True)
class IoSpec:
    """One AVL IO element."""

    id: int
    name: str
    size: int  # bytes on the wire; 0 = variable (Codec 8E NX element)
    signed: bool = False
    scale: float | None = None
    unit: str | None = None
    meaning: str = ""
    text: bool = False  # NX element holding ASCII
    missing: frozenset[int] = frozenset()
    can: tuple[str, str | None, float] | None = None  # canonical CAN signal: (name, unit, factor)
    can_bits: tuple[tuple[int, str], ...] = ()  # (bit mask, canonical 0/1 signal)
    alarm: bool = False
    decimals: int | None = field(init=False, default=None)  # of the scaled value: hides 0.1 * 3 noise

    def __post_init__(self) -> None:
        if self.scale is not None:
            text = f"{self.scale:.10f}".rstrip("0")
            object.__setattr__(self, "decimals", len(text.split(".")[1]) if "." in text else 0)


_DALLAS_MISSING = frozenset({850, 2000, 3000, 4000, 5000})
_BLE_MISSING = frozenset({2000, 3000, 4000})


def _io(number: int, name: str, size: int, **kwargs: object) -> IoSpec:
    return IoSpec(number, name, size, **kwargs)  # type: ignore[arg-type]


IO_ELEMENTS: dict[int, IoSpec] = {
    spec.id: spec
    for spec in (
        _io(239, "ignition", 1, meaning="0 off, 1 on"),
        _io(240, "movement", 1, meaning="0 off, 1 on"),
        _io(
            80,
            "data_mode",
            1,
            meaning="0 home/stop, 1 home/moving, 2 roaming/stop, 3 roaming/moving, 4/5 unknown",
        ),
        _io(21, "gsm_signal", 1, meaning="0..5 bars"),
        _io(200, "sleep_mode", 1, meaning="0 none, 1 GPS sleep, 2 deep, 3 online, 4 ultra"),
        _io(69, "gnss_status", 1, meaning="0 off, 1 fix, 2 no fix, 3 sleep, 4 fix with invalid data"),
        _io(181, "gnss_pdop", 2, scale=0.1, meaning="position dilution of precision"),
        _io(182, "gnss_hdop", 2, scale=0.1, meaning="horizontal dilution (also the position's hdop)"),
        _io(66, "external_voltage", 2, scale=0.001, unit="V"),
        _io(67, "battery_voltage", 2, scale=0.001, unit="V", meaning="internal battery"),
        _io(68, "battery_current", 2, scale=0.001, unit="A"),
        _io(24, "gnss_speed", 2, unit="km/h", meaning="GNSS speed (as in the record)"),
        _io(205, "gsm_cell_id", 2, meaning="2G/3G cell"),
        _io(206, "gsm_area_code", 2, meaning="LAC"),
        _io(636, "lte_cell_id", 4),
        _io(241, "gsm_operator", 4, meaning="MCC and MNC as one decimal"),
        _io(16, "total_odometer", 4, unit="m"),
        _io(199, "trip_odometer", 4, unit="m"),
        _io(1, "din1", 1, meaning="digital input 1"),
        _io(2, "din2", 1, meaning="digital input 2"),
        _io(3, "din3", 1, meaning="digital input 3"),
        _io(4, "pulse_counter_din1", 4, meaning="reset when a record is saved"),
        _io(9, "ain1", 2, scale=0.001, unit="V", meaning="analog input 1"),
        _io(6, "ain2", 2, scale=0.001, unit="V", meaning="analog input 2"),
        _io(179, "dout1", 1, meaning="digital output 1"),
        _io(180, "dout2", 1, meaning="digital output 2"),
        _io(10, "sd_status", 1, meaning="0 absent, 1 present"),
        _io(11, "iccid1", 8, meaning="SIM ICCID, most significant part"),
        _io(14, "iccid2", 8, meaning="SIM ICCID, least significant part"),
        _io(12, "fuel_used_gps", 4, scale=0.001, unit="l"),
        _io(13, "fuel_rate_gps", 2, scale=0.01, unit="l/100 km"),
        _io(15, "eco_score", 2, scale=0.01),
        _io(17, "axis_x", 2, signed=True, unit="mG"),
        _io(18, "axis_y", 2, signed=True, unit="mG"),
        _io(19, "axis_z", 2, signed=True, unit="mG"),
        *(
            _io(
                72 + i,
                f"dallas_temperature_{i + 1}",
                4,
                signed=True,
                scale=0.1,
                unit="°C",
                missing=_DALLAS_MISSING,
                meaning="850 not ready, 2000 read error, 3000 not connected, 4000 ID failed",
            )
            for i in range(4)
        ),
        _io(76, "dallas_temperature_id_1", 8, meaning="sensor ROM id"),
        _io(78, "ibutton", 8, meaning="driver key id"),
        _io(207, "rfid", 8),
        _io(113, "battery_level", 1, unit="%"),
        _io(
            25,
            "ble_temperature_1",
            2,
            signed=True,
            scale=0.01,
            unit="°C",
            missing=_BLE_MISSING,
            meaning="4000 abnormal, 3000 not found, 2000 parse failure",
        ),
        _io(29, "ble_battery_1", 1, unit="%"),
        _io(30, "obd_dtc_count", 1, meaning="number of DTCs (OBD)"),
        _io(31, "obd_engine_load", 1, unit="%", can=("engine_load", "%", 1.0)),
        _io(32, "obd_coolant_temperature", 1, signed=True, unit="°C", can=("coolant_temperature", "°C", 1.0)),
        _io(36, "obd_engine_rpm", 2, unit="rpm", can=("engine_speed", "rpm", 1.0)),
        _io(37, "obd_vehicle_speed", 1, unit="km/h", can=("vehicle_speed", "km/h", 1.0)),
        _io(48, "obd_fuel_level", 1, unit="%", can=("fuel_level", "%", 1.0)),
        _io(81, "can_vehicle_speed", 1, unit="km/h", can=("vehicle_speed", "km/h", 1.0)),
        _io(82, "can_accelerator_pedal", 1, unit="%", can=("accelerator_pedal", "%", 1.0)),
        _io(83, "can_fuel_consumed", 4, scale=0.1, unit="l", can=("fuel_used_total", "l", 0.1)),
        _io(84, "can_fuel_level_volume", 2, scale=0.1, unit="l", can=("fuel_level_volume", "l", 0.1)),
        _io(85, "can_engine_rpm", 2, unit="rpm", can=("engine_speed", "rpm", 1.0)),
        _io(87, "can_total_mileage", 4, unit="m", can=("vehicle_distance", "km", 0.001)),
        _io(89, "can_fuel_level", 1, unit="%", can=("fuel_level", "%", 1.0)),
        _io(
            90,
            "can_door_status",
            2,
            meaning="bits: 0x100 front-left, 0x200 front-right, 0x400 rear-left, "
            "0x800 rear-right, 0x1000 hood, 0x2000 trunk",
            can_bits=(
                (0x100, "driver_door_open"),
                (0x200, "front_passenger_door_open"),
                (0xC00, "passenger_doors_open"),
                (0x1000, "hood_open"),
                (0x2000, "trunk_open"),
            ),
        ),
        _io(175, "auto_geofence", 1, meaning="0 left, 1 entered"),
        _io(236, "alarm", 1, meaning="1 = alarm event", alarm=True),
        _io(246, "towing", 1, meaning="0 steady, 1 towing", alarm=True),
        _io(247, "crash_detection", 1, meaning="1..6 crash / crash-trace variants", alarm=True),
        _io(249, "jamming", 1, meaning="1 start, 0 stop", alarm=True),
        _io(250, "trip", 1, meaning="0 stop, 1 start"),
        _io(251, "idling", 1, meaning="0 moving, 1 idling"),
        _io(252, "unplug", 1, meaning="0 battery present, 1 unplugged", alarm=True),
        _io(253, "green_driving_type", 1, meaning="1 harsh acceleration, 2 harsh braking, 3 harsh cornering"),
        _io(254, "green_driving_value", 1, scale=0.01, unit="g or rad/s"),
        _io(255, "over_speeding", 1, unit="km/h"),
        _io(10800, "eye_temperature_1", 2, signed=True, scale=0.01, unit="°C", meaning="Codec 8E only"),
        _io(256, "vin_obd", 0, text=True, meaning="VIN from OBD (NX)"),
        _io(325, "vin_can", 0, text=True, meaning="VIN from a CAN adapter (NX)"),
        _io(281, "obd_fault_codes", 0, text=True, meaning="comma-separated DTCs (NX)"),
        _io(385, "beacon_list", 0, meaning="BLE iBeacon/Eddystone records (NX, hex)"),
        _io(548, "advanced_ble_beacons", 0, meaning="NX, hex"),
        _io(257, "crash_trace", 0, meaning="NX, hex"),
        _io(387, "iso6709_coordinates", 0, text=True, meaning="±DDMMSS.SSSS±DDDMMSS.SSSS±AAA.AAA/ (NX)"),
    )
}
