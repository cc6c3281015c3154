"""The FLEX record field table (fields 1..255, DOC v6.1 Appendix A.1) as data.

One row per field: wire size, struct code (little-endian, concatenated into one struct per negotiated mask),
the attribute name(s) and unit(s), and the converter from wire value to attribute value. Fields marked
``core`` are exposed as properties of :class:`FlexRecord` (``latitude``, ``power_v``...) instead of entries
of ``FlexRecord.attributes``. ``docs/navtelecom_fields.md`` is generated from this table
(``python -m fleet.protocol.navtelecom.docgen``) and a test keeps the two identical.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .convert import (
    CanLevel,
    Converter,
    Custom,
    FuelLevel,
    FuelLevelTemp,
    Items,
    NoneIf,
    NoneIfNegative,
    Scale,
    UnixTime,
    engine_state_rpm,
    high_precision_coordinates,
    lamps_and_dtc,
    lbs_cells,
    pitch_roll,
    tyre_sensors,
)

__all__ = ["FIELDS", "FIELD_100_SIZES", "MAX_FIELD", "FieldSpec", "field_spec"]

MAX_FIELD = 255
# Field 100 (tachograph flags) is 2 bytes since DOC v6.0 and 1 byte in older documents and firmware.
FIELD_100_SIZES = (1, 2)


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One FLEX field: where it sits on the wire and what it becomes after decoding."""

    number: int
    fmt: str  # struct codes without byte order, e.g. "I", "2B", "4s"
    names: tuple[str, ...]
    units: tuple[str, ...]
    meaning: str
    version: str  # FLEX structure version that introduced the field
    converter: Converter | None = None  # None: the wire value is the attribute value
    core: bool = False  # decoded into FlexRecord properties, not into attributes

    @property
    def size(self) -> int:
        """Return the field's size in bytes."""
        return struct.calcsize("<" + self.fmt)

    @property
    def item_count(self) -> int:
        """Return how many values the field contributes to an unpacked record tuple."""
        return len(struct.unpack("<" + self.fmt, bytes(self.size)))


def _f(
    number: int,
    fmt: str,
    names: str,
    units: str,
    meaning: str,
    version: str,
    converter: Converter | None = None,
    core: bool = False,
) -> FieldSpec:
    return FieldSpec(
        number, fmt, tuple(names.split()), tuple(units.split("|")), meaning, version, converter, core
    )


def _series(
    first: int,
    last: int,
    fmt: str,
    name: str,
    units: str,
    meaning: str,
    version: str,
    converter: Converter | None = None,
    start: int = 1,
) -> list[FieldSpec]:
    """Rows for a numbered series; ``{n}`` in name/meaning is the sensor number starting at ``start``."""
    rows = []
    for offset, number in enumerate(range(first, last + 1)):
        n = start + offset
        rows.append(_f(number, fmt, name.format(n=n), units, meaning.format(n=n), version, converter))
    return rows


_MV_TO_V = Scale(div=1000)
_TEMP_I8 = NoneIf(-128)
_NO_U8 = NoneIf(0xFF)
_NO_U16 = NoneIf(0xFFFF)
_NO_I16 = NoneIf(-32768)
_FUEL = FuelLevel()
_CENTI_NO_U32 = Scale(div=100, none_if=0xFFFFFFFF)
_DECI_NO_I16 = Scale(div=10, none_if=-32768)
_CENTI_NO_I16 = Scale(div=100, none_if=-32768)
_OPAQUE = "raw bytes; type set in the device configuration"

_ROWS: list[FieldSpec] = [
    _f(1, "I", "index", "", "Record index in the black box (0 for current-state records)", "1.0", core=True),
    _f(2, "H", "event_code", "", "Event code (0xFF00 = current state)", "1.0", core=True),
    _f(3, "I", "device_time", "datetime UTC", "Event time", "1.0", UnixTime(), core=True),
    _f(
        4,
        "B",
        "device_status",
        "bits",
        "b0 test mode, b1 alarm notify, b2 alarm, b3-4 mode, b5 towing, "
        "b6 power saving, b7 accelerometer calibrated",
        "1.0",
    ),
    _f(
        5,
        "B",
        "modules_status_1",
        "bits",
        "b0 GSM, b1 USB, b2 HP GNSS, b3 clock synced, b4 SIM 2, b5 registered, b6 roaming, b7 engine running",
        "1.0",
    ),
    _f(
        6,
        "B",
        "modules_status_2",
        "bits",
        "b0-1 GSM jamming, b2 GNSS jamming, b3 averaging, b4 accel error, b5 Bluetooth, b6 Wi-Fi",
        "1.0",
    ),
    _f(7, "B", "gsm_level", "0..31", "GSM level (0 = -113 dBm .. 31 = -51 dBm)", "1.0", NoneIf(99)),
    _f(
        8,
        "B",
        "valid satellites",
        "bool|count",
        "Navigation state: b0 receiver on, b1 valid fix, b2-7 satellites",
        "1.0",
        core=True,
    ),
    _f(9, "I", "fix_time", "datetime UTC", "Time of the last valid fix", "1.0", UnixTime(), core=True),
    _f(10, "i", "latitude", "°", "Last valid latitude, raw / 600000", "1.0", core=True),
    _f(11, "i", "longitude", "°", "Last valid longitude, raw / 600000", "1.0", core=True),
    _f(12, "i", "altitude_m", "m", "Last valid altitude, raw dm / 10", "1.0", core=True),
    _f(13, "f", "speed_kmh", "km/h", "Speed at the last valid fix", "1.0", core=True),
    _f(14, "H", "course", "°", "Course at the last valid fix", "1.0", core=True),
    _f(15, "f", "odometer_km", "km", "Mileage from GNSS data", "1.0", core=True),
    _f(16, "f", "segment_km", "km", "Distance of the last track segment", "1.0"),
    _f(17, "H", "segment_s", "s", "Duration of the last segment", "1.0"),
    _f(18, "H", "segment_valid_s", "s", "Seconds of the last segment with valid navigation", "1.0"),
    _f(19, "H", "power_v", "V", "Main power voltage, raw mV / 1000", "1.0", _MV_TO_V, core=True),
    _f(20, "H", "battery_v", "V", "Backup battery voltage, raw mV / 1000", "1.0", _MV_TO_V, core=True),
    *_series(21, 28, "H", "ain{n}_mv", "mV", "Analog input {n}", "1.0"),
    _f(29, "B", "inputs", "bits", "Discrete inputs 1-8 (bits 0-7 of `inputs`)", "1.0", core=True),
    _f(30, "B", "inputs", "bits", "Discrete inputs 9-16 (bits 8-15 of `inputs`)", "1.0", core=True),
    _f(31, "B", "outputs", "bits", "Outputs 1-8 (bits 0-7 of `outputs`)", "1.0", core=True),
    _f(32, "B", "outputs", "bits", "Outputs 9-16 (bits 8-15 of `outputs`)", "1.0", core=True),
    *_series(33, 34, "I", "counter{n}", "pulses", "Pulse counter {n}", "1.0"),
    *_series(35, 36, "H", "frequency{n}_hz", "Hz", "Frequency input {n}", "1.0"),
    _f(37, "I", "engine_hours_s", "s", "Engine hours while the ignition sensor is active", "1.0"),
    *_series(
        38,
        43,
        "H",
        "fuel_rs485_{n} fuel_rs485_{n}_error",
        "0.1 l or sensor units|error code",
        "RS-485 fuel sensor {n}",
        "1.0",
        _FUEL,
    ),
    _f(
        44,
        "H",
        "fuel_rs232 fuel_rs232_error",
        "0.1 l or sensor units|error code",
        "RS-232 fuel sensor",
        "1.0",
        _FUEL,
    ),
    *_series(45, 52, "b", "temperature{n}_c", "°C", "1-Wire temperature sensor {n}", "1.0", _TEMP_I8),
    _f(53, "H", "can_fuel_pct can_fuel_l", "%|l", "CAN fuel level", "1.0", CanLevel()),
    _f(54, "f", "can_fuel_used_l", "l", "CAN total fuel used", "1.0", NoneIfNegative()),
    _f(55, "H", "can_rpm", "rpm", "CAN engine speed", "1.0", _NO_U16),
    _f(56, "b", "can_coolant_temperature_c", "°C", "CAN coolant temperature", "1.0", _TEMP_I8),
    _f(57, "f", "can_odometer_km", "km", "CAN total vehicle mileage", "1.0", NoneIfNegative()),
    *_series(58, 62, "H", "can_axle_load{n}_kg", "kg", "CAN axle {n} load", "1.0", _NO_U16),
    _f(63, "B", "can_accelerator_pct", "%", "CAN accelerator pedal position", "1.0", _NO_U8),
    _f(64, "B", "can_brake_pct", "%", "CAN brake pedal position", "1.0", _NO_U8),
    _f(65, "B", "can_engine_load_pct", "%", "CAN engine load", "1.0", _NO_U8),
    _f(66, "H", "can_adblue_pct can_adblue_l", "%|l", "CAN AdBlue level", "1.0", CanLevel()),
    _f(67, "I", "can_engine_hours_s", "s", "CAN total engine hours", "1.0"),
    _f(
        68,
        "h",
        "can_service_distance_km",
        "km",
        "CAN distance to service, raw in 5 km units",
        "1.0",
        Scale(mul=5, none_if=-1),
    ),
    _f(69, "B", "can_speed_kmh", "km/h", "CAN vehicle speed", "1.0", _NO_U8),
    # FLEX 2.0
    _f(
        70,
        "8B",
        "satellites_visible",
        "count per system",
        "Visible satellites: GLONASS, GPS, Galileo, Compass, Beidou, DORIS, IRNSS, QZSS",
        "2.0",
        Items(),
    ),
    _f(
        71,
        "2B",
        "hdop pdop",
        "|",
        "HDOP and PDOP ×10 of the built-in receiver (0 = unknown)",
        "2.0",
        core=True,
    ),
    _f(
        72,
        "B",
        "hp_receiver_state",
        "bits",
        "High-precision receiver: b0 fixed, b1 RTK, b2-7 satellites",
        "2.0",
    ),
    _f(
        73,
        "2q",
        "hp_latitude hp_longitude",
        "°|°",
        "High-precision coordinates, raw / 600000000",
        "2.0",
        Custom(high_precision_coordinates, "(raw lat / 600000000, raw lon / 600000000)"),
    ),
    _f(74, "i", "hp_altitude_m", "m", "High-precision altitude, raw mm / 1000", "2.0", Scale(div=1000)),
    _f(75, "H", "hp_course", "°", "High-precision course, raw / 100", "2.0", Scale(div=100)),
    _f(76, "f", "hp_speed_kmh", "km/h", "High-precision speed", "2.0"),
    _f(
        77,
        "IHHHbIHHHbIHHHbI",
        "lbs_cells lbs_time",
        "cells|datetime UTC",
        "LBS: serving + 2 neighbour cells {cell_id, lac, mcc, mnc, rx_level_dbm}, time of the LBS data",
        "2.0",
        Custom(lbs_cells, "(3 cell dicts, datetime or None if 0)"),
    ),
    *_series(
        78, 83, "b", "fuel_rs485_{n}_temperature_c", "°C", "Temperature of RS-485 fuel sensor {n}", "2.0"
    ),
    *_series(
        84,
        93,
        "Hb",
        "fuel_rs485_{n} fuel_rs485_{n}_error fuel_rs485_{n}_temperature_c",
        "0.1 l or sensor units|error code|°C",
        "RS-485 fuel sensor {n}: level + temperature",
        "2.0",
        FuelLevelTemp(),
        start=7,
    ),
    _f(
        94,
        "BBb" * 2,
        "tyres_1_2",
        "list",
        "Tyre sensors 1-2 {wheel, pressure_bar, temperature_c}",
        "2.0",
        Custom(
            tyre_sensors, "sensors with wheel ≠ 0; pressure raw / 10 (None if 0), temperature None if -128"
        ),
    ),
    _f(95, "BBb" * 4, "tyres_3_6", "list", "Tyre sensors 3-6", "2.0", Custom(tyre_sensors, "as field 94")),
    _f(96, "BBb" * 8, "tyres_7_14", "list", "Tyre sensors 7-14", "2.0", Custom(tyre_sensors, "as field 94")),
    _f(
        97,
        "BBb" * 16,
        "tyres_15_30",
        "list",
        "Tyre sensors 15-30",
        "2.0",
        Custom(tyre_sensors, "as field 94"),
    ),
    _f(98, "B", "tachograph_driver_state", "bits", "Tachograph driver activities and card slots", "2.0"),
    _f(99, "B", "tachograph_mode", "", "Tachograph mode (0 off, 1 driver, 2 workshop, ...)", "2.0"),
    _f(
        100,
        "H",
        "tachograph_flags",
        "bits",
        "Tachograph flags (size 2 by default, 1 for old firmware)",
        "2.0",
    ),
    _f(101, "B", "tachograph_speed_kmh", "km/h", "Tachograph speed", "2.0", _NO_U8),
    _f(
        102,
        "I",
        "tachograph_odometer_km",
        "km",
        "Tachograph odometer, raw / 10",
        "2.0",
        Scale(div=10, none_if=0xFFFFFFFF),
    ),
    _f(103, "I", "tachograph_time", "datetime UTC", "Tachograph time", "2.0", UnixTime()),
    _f(104, "B", "driver_state", "", "Driver state from the display module", "2.0"),
    _f(105, "I", "display_message_index", "", "Last message received/read on the display", "2.0"),
    _f(
        106,
        "H",
        "time_increment_s",
        "s",
        "Time since the previous record, raw / 100",
        "2.0",
        Scale(div=100, none_if=0xFFFF),
    ),
    _f(107, "3h", "acceleration_mg", "mg", "Linear acceleration X, Y, Z", "2.0", Items(none_if=-32768)),
    _f(
        108,
        "H",
        "eco_over_threshold_s",
        "s",
        "EcoDriving time over threshold, raw / 100",
        "2.0",
        Scale(div=100, none_if=0xFFFF),
    ),
    _f(
        109,
        "3h",
        "eco_max_acceleration_mg",
        "mg",
        "EcoDriving maxima: acceleration, braking, lateral",
        "2.0",
        Items(none_if=-32768),
    ),
    *[
        _f(
            110 + i,
            "2B",
            f"passengers_{2 * i + 1}_{2 * i + 2}",
            "count",
            f"Passenger counters {2 * i + 1} and {2 * i + 2}",
            "2.0",
            Items(none_if=255),
        )
        for i in range(8)
    ],
    _f(118, "B", "announcer_status", "bits", "Bus announcer status", "2.0"),
    _f(119, "H", "last_geofence_id", "", "Last geofence id (0 = none)", "2.0"),
    _f(120, "H", "last_stop_id", "", "Last stop id (0 = none)", "2.0"),
    _f(121, "H", "route_id", "", "Current route id (0 = not set)", "2.0"),
    _f(122, "B", "camera_status", "bits", "Camera status", "2.0"),
    # FLEX 3.0
    _f(123, "B", "device_status_2", "bits", "b0 case opened, b1-2 GNSS antenna state", "3.0"),
    _f(124, "B", "modules_status_3", "bits", "b0 Iridium, b1 inertial navigation", "3.0"),
    _f(125, "B", "link_status", "bits", "Channel and server connection state", "3.0"),
    _f(126, "B", "inputs", "bits", "Discrete inputs 17-24 (bits 16-23 of `inputs`)", "3.0", core=True),
    *_series(127, 132, "I", "counter{n}", "pulses", "Pulse counter {n}", "3.0", start=3),
    *_series(133, 138, "H", "frequency{n}_hz", "Hz", "Frequency input {n}", "3.0", start=3),
    _f(139, "B", "accelerometer_sensors", "bits", "Virtual accelerometer sensors SH1-SH4, WAKEUP", "3.0"),
    _f(140, "B", "tilt_deg", "°", "Tilt from the local vertical, raw / 4", "3.0", Scale(div=4)),
    _f(
        141,
        "2b",
        "pitch_deg roll_deg",
        "°|°",
        "Internal tilt: pitch, roll (raw × 1.5)",
        "3.0",
        Custom(pitch_roll, "(pitch raw, roll raw × 1.5)"),
    ),
    _f(142, "3B", "external_tilt_deg", "°", "External tilt sensor X, Y, Z", "3.0", Items()),
    _f(143, "h", "eco_max_vertical_mg", "mg", "EcoDriving max vertical acceleration", "3.0"),
    _f(144, "B", "eco_max_speed_kmh", "km/h", "EcoDriving max speed", "3.0"),
    _f(145, "B", "eco_speed_thresholds", "bits", "EcoDriving speed thresholds 1-6", "3.0"),
    _f(
        146,
        "3B",
        "eco_thresholds",
        "bits",
        "EcoDriving acceleration/braking/turn/vertical thresholds",
        "3.0",
        Items(),
    ),
    *_series(
        147,
        162,
        "H",
        "fuel_rs485_{n}_frequency_hz",
        "Hz",
        "Output frequency of RS-485 fuel sensor {n}",
        "3.0",
        _NO_U16,
    ),
    *_series(
        163,
        166,
        "h",
        "temperature_hp{n}_c",
        "°C",
        "High-precision temperature sensor {n}, raw / 20",
        "3.0",
        Scale(div=20, none_if=-32768),
    ),
    *_series(
        167,
        170,
        "B",
        "humidity{n}_pct",
        "%",
        "Humidity sensor {n}, raw / 2",
        "3.0",
        Scale(div=2, none_if=0xFF),
    ),
    _f(171, "H", "flow_meter_status", "bits", "Fuel flow meter chamber/engine modes", "3.0"),
    _f(172, "I", "flow_meter_faults", "bits", "Fuel flow meter fault bits", "3.0"),
    _f(173, "I", "flow_total_fuel_l", "l", "Flow meter total fuel, raw / 100", "3.0", _CENTI_NO_U32),
    _f(174, "I", "flow_trip_fuel_l", "l", "Flow meter trip fuel, raw / 100", "3.0", _CENTI_NO_U32),
    _f(175, "h", "flow_rate_lph", "l/h", "Flow meter current flow, raw / 10", "3.0", _DECI_NO_I16),
    _f(176, "I", "flow_supply_total_l", "l", "Supply chamber total volume, raw / 100", "3.0", _CENTI_NO_U32),
    _f(177, "h", "flow_supply_rate_lph", "l/h", "Supply chamber flow, raw / 10", "3.0", _DECI_NO_I16),
    _f(
        178,
        "h",
        "flow_supply_temperature_c",
        "°C",
        "Supply chamber temperature, raw / 10",
        "3.0",
        _DECI_NO_I16,
    ),
    _f(179, "I", "flow_return_total_l", "l", "Return chamber total volume, raw / 100", "3.0", _CENTI_NO_U32),
    _f(180, "h", "flow_return_rate_lph", "l/h", "Return chamber flow, raw / 10", "3.0", _DECI_NO_I16),
    _f(
        181,
        "h",
        "flow_return_temperature_c",
        "°C",
        "Return chamber temperature, raw / 10",
        "3.0",
        _DECI_NO_I16,
    ),
    _f(182, "2B", "fridge_state", "bits", "Refrigerator link/door/type flags and mode", "3.0", Items()),
    *_series(
        183,
        185,
        "h",
        "fridge_section{n}_temperature_c",
        "°C",
        "Refrigerator section {n}, raw / 100",
        "3.0",
        _CENTI_NO_I16,
    ),
    *_series(
        186,
        188,
        "h",
        "fridge_setpoint{n}_c",
        "°C",
        "Refrigerator set point {n}, raw / 100",
        "3.0",
        _CENTI_NO_I16,
    ),
    _f(
        189,
        "h",
        "fridge_ambient_temperature_c",
        "°C",
        "Refrigerator ambient temperature, raw / 100",
        "3.0",
        _CENTI_NO_I16,
    ),
    _f(
        190,
        "h",
        "fridge_coolant_temperature_c",
        "°C",
        "Refrigerator coolant temperature, raw / 100",
        "3.0",
        _CENTI_NO_I16,
    ),
    _f(
        191,
        "H",
        "fridge_battery_v",
        "V",
        "Refrigerator battery voltage, raw mV / 1000",
        "3.0",
        Scale(div=1000, none_if=0xFFFF),
    ),
    _f(
        192,
        "H",
        "fridge_battery_a",
        "A",
        "Refrigerator battery current, raw mA / 1000",
        "3.0",
        Scale(div=1000, none_if=0xFFFF),
    ),
    _f(
        193,
        "I",
        "fridge_engine_hours_h",
        "h",
        "Refrigerator hours on engine, raw / 100",
        "3.0",
        _CENTI_NO_U32,
    ),
    _f(194, "I", "fridge_mains_hours_h", "h", "Refrigerator hours on mains, raw / 100", "3.0", _CENTI_NO_U32),
    _f(195, "2H", "fridge_errors", "", "Refrigerator error count and main error code", "3.0", Items()),
    _f(196, "2H", "fridge_error_codes_2_3", "", "Refrigerator error codes 2-3", "3.0", Items()),
    _f(197, "3H", "fridge_error_codes_4_6", "", "Refrigerator error codes 4-6", "3.0", Items()),
    _f(
        198,
        "BH",
        "fridge_engine_state fridge_engine_rpm",
        "|rpm",
        "Refrigerator engine state and RPM",
        "3.0",
        Custom(engine_state_rpm, "(state raw, rpm None if 0xFFFF)"),
    ),
    _f(199, "B", "fridge_compressor_config", "", "Refrigerator compressor configuration", "3.0"),
    _f(200, "H", "geofences", "bits", "Inside geofences 1-10", "3.0"),
    _f(201, "H", "can_security_flags", "bits", "CAN security state flags", "3.0"),
    _f(202, "B", "can_security_event", "", "CAN security last event", "3.0"),
    _f(203, "I", "can_warning_lamps", "bits", "CAN dashboard warning lamps", "3.0"),
    _f(
        204,
        "BI",
        "can_malfunction_lamps can_dtc",
        "bits|",
        "CAN malfunction lamps and DTC code",
        "3.0",
        Custom(lamps_and_dtc, "(lamp bits raw, DTC raw)"),
    ),
    _f(205, "I", "user_engine_hours_s", "s", "User engine hours 1 (under load)", "3.0"),
    _f(206, "I", "diagnostic_codes", "bits", "Device diagnostic codes", "3.0"),
    *_series(207, 222, "1s", "user_1byte_{n}", "bytes", "User 1-byte parameter {n} (" + _OPAQUE + ")", "3.0"),
    *_series(223, 237, "2s", "user_2byte_{n}", "bytes", "User 2-byte parameter {n} (" + _OPAQUE + ")", "3.0"),
    *_series(238, 252, "4s", "user_4byte_{n}", "bytes", "User 4-byte parameter {n} (" + _OPAQUE + ")", "3.0"),
    *_series(253, 255, "8s", "user_8byte_{n}", "bytes", "User 8-byte parameter {n} (" + _OPAQUE + ")", "3.0"),
]

FIELDS: dict[int, FieldSpec] = {row.number: row for row in _ROWS}

if sorted(FIELDS) != list(range(1, MAX_FIELD + 1)) or len(_ROWS) != MAX_FIELD:  # pragma: no cover
    raise RuntimeError("the FLEX field table must list fields 1..255 exactly once")

_FIELD_100_1_BYTE = FieldSpec(100, "B", FIELDS[100].names, FIELDS[100].units, FIELDS[100].meaning, "2.0")


def field_spec(number: int, field100_size: int = 2) -> FieldSpec:
    """Return the spec of one field, honouring the configured size of field 100."""
    if number == 100 and field100_size == 1:
        return _FIELD_100_1_BYTE
    return FIELDS[number]
