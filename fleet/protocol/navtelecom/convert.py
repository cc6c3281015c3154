"""Value converters for FLEX fields: wire value in, typed unit-bearing value out.

Each converter is a small callable object that also describes itself, so that the published field table
(docs/navtelecom_fields.md) is generated from the very objects that do the conversion.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "CanLevel",
    "Converter",
    "Custom",
    "FuelLevel",
    "FuelLevelTemp",
    "Items",
    "NoneIf",
    "NoneIfNegative",
    "Scale",
    "UnixTime",
    "unix_to_datetime",
]

# Fuel sensors report errors in the top of the U16 range (DOC App. Д): 65500..65535.
FUEL_ERROR_MIN = 65500

# Timestamps outside this range cannot be a device clock and would overflow datetime on some platforms.
_MAX_UNIX = 253402300799  # 9999-12-31T23:59:59Z


def unix_to_datetime(seconds: int) -> datetime | None:
    """Return the UTC datetime of a Unix time; 0 (clock never set) and out-of-range values give None."""
    if seconds <= 0 or seconds > _MAX_UNIX:
        return None
    return datetime.fromtimestamp(seconds, UTC)


class Converter(ABC):
    """Base class: turn one field's wire value into its attribute value(s)."""

    __slots__ = ()

    @abstractmethod
    def __call__(self, value: Any) -> Any:
        """Convert one wire value."""

    @abstractmethod
    def describe(self) -> str:
        """Return the conversion and 'not available' rule as Markdown text."""

    def compiled(self) -> Callable[[Any], Any]:
        """Return a plain function doing the same conversion (cheaper to call on the hot path)."""
        return self.__call__


def _fmt(number: float) -> str:
    if isinstance(number, float) and number.is_integer():
        number = int(number)
    return str(number)


class Scale(Converter):
    """Divide (or multiply) the wire value; an optional sentinel maps to None."""

    __slots__ = ("div", "mul", "none_if")

    def __init__(self, *, div: float | None = None, mul: float | None = None, none_if: int | None = None):
        self.div = div
        self.mul = mul
        self.none_if = none_if

    def __call__(self, value: Any) -> Any:
        if value == self.none_if:
            return None
        if self.div is not None:
            return value / self.div
        if self.mul is not None:
            return value * self.mul
        return value

    def compiled(self) -> Callable[[Any], Any]:
        none_if, div, mul = self.none_if, self.div, self.mul
        if div is not None:
            if none_if is None:
                return lambda value: value / div
            return lambda value: None if value == none_if else value / div
        if mul is not None:
            if none_if is None:
                return lambda value: value * mul
            return lambda value: None if value == none_if else value * mul
        return lambda value: None if value == none_if else value

    def describe(self) -> str:
        parts = []
        if self.div is not None:
            parts.append(f"raw / {_fmt(self.div)}")
        if self.mul is not None:
            parts.append(f"raw × {_fmt(self.mul)}")
        if self.none_if is not None:
            parts.append(f"None if raw = {_sentinel_text(self.none_if)}")
        return "; ".join(parts) or "raw"


def _sentinel_text(value: int) -> str:
    if value < 0:
        return str(value)
    if value >= 0xFF:
        return f"0x{value:X}"
    return str(value)


class NoneIf(Scale):
    """Keep the wire value but map one sentinel to None."""

    __slots__ = ()

    def __init__(self, sentinel: int):
        super().__init__(none_if=sentinel)


class NoneIfNegative(Converter):
    """Keep a float; negative values mean "not read" (CAN floats)."""

    __slots__ = ()

    def __call__(self, value: float) -> float | None:
        return None if value < 0 else value

    def describe(self) -> str:
        return "None if negative"


class UnixTime(Converter):
    """Unix seconds to an aware UTC datetime; 0 means "never set"."""

    __slots__ = ()

    def __call__(self, value: int) -> datetime | None:
        return unix_to_datetime(value)

    def describe(self) -> str:
        return "Unix s → datetime UTC; None if 0"


class FuelLevel(Converter):
    """RS-485/RS-232 fuel level: values 65500..65535 are sensor error codes, not levels."""

    __slots__ = ()

    def __call__(self, value: int) -> tuple[int | None, int | None]:
        if value >= FUEL_ERROR_MIN:
            return None, value
        return value, None

    def describe(self) -> str:
        return "level: raw, None if ≥ 65500; error: the code 65500..65535, else None"


class FuelLevelTemp(Converter):
    """RS-485 fuel sensors 7..16: U16 level (as FuelLevel) followed by I8 temperature."""

    __slots__ = ()

    def __call__(self, value: tuple[int, int]) -> tuple[int | None, int | None, int]:
        level, temperature = value
        if level >= FUEL_ERROR_MIN:
            return None, level, temperature
        return level, None, temperature

    def describe(self) -> str:
        return "level/error as fields 38-43; temperature raw °C"


class CanLevel(Converter):
    """CAN fuel/AdBlue level: b15 set → b0-14 percent, clear → b0-14 in 0.1 l; 0x7FFF = not read."""

    __slots__ = ()

    def __call__(self, value: int) -> tuple[int | None, float | None]:
        if value == 0x7FFF or value == 0xFFFF:
            return None, None
        if value & 0x8000:
            return value & 0x7FFF, None
        return None, value / 10

    def describe(self) -> str:
        return "b15=1: percent = b0-14; b15=0: litres = b0-14 / 10; both None if 0x7FFF"


class Items(Converter):
    """A fixed group of small values kept as a tuple; one sentinel maps to None item by item."""

    __slots__ = ("div", "mul", "none_if")

    def __init__(self, *, none_if: int | None = None, mul: float | None = None, div: float | None = None):
        self.none_if = none_if
        self.mul = mul
        self.div = div

    def __call__(self, value: tuple[Any, ...]) -> tuple[Any, ...]:
        none_if, mul, div = self.none_if, self.mul, self.div
        out: list[Any] = []
        for item in value:
            if item == none_if:
                out.append(None)
            elif div is not None:
                out.append(item / div)
            elif mul is not None:
                out.append(item * mul)
            else:
                out.append(item)
        return tuple(out)

    def describe(self) -> str:
        text = "tuple"
        if self.div is not None:
            text += f", items / {_fmt(self.div)}"
        if self.mul is not None:
            text += f", items × {_fmt(self.mul)}"
        if self.none_if is not None:
            text += f"; item None if raw = {_sentinel_text(self.none_if)}"
        return text


class Custom(Converter):
    """A named function for structured fields (LBS cells, tyre sensors, high-precision coordinates)."""

    __slots__ = ("func", "text")

    def __init__(self, func: Callable[[Any], Any], text: str):
        self.func = func
        self.text = text

    def __call__(self, value: Any) -> Any:
        return self.func(value)

    def describe(self) -> str:
        return self.text


def lbs_cells(value: tuple[int, ...]) -> tuple[tuple[dict[str, int], ...], datetime | None]:
    """Split field 77 into (serving + two neighbour cells, time of the LBS data)."""
    cells = tuple(
        {
            "cell_id": value[i],
            "lac": value[i + 1],
            "mcc": value[i + 2],
            "mnc": value[i + 3],
            "rx_level_dbm": value[i + 4],
        }
        for i in (0, 5, 10)
    )
    return cells, unix_to_datetime(value[15])


def tyre_sensors(value: tuple[int, ...]) -> tuple[dict[str, Any], ...]:
    """Turn {wheel, pressure 0.1 bar, temperature} triples into dicts, dropping absent sensors (wheel 0)."""
    sensors = []
    for i in range(0, len(value), 3):
        wheel, pressure, temperature = value[i], value[i + 1], value[i + 2]
        if wheel == 0:
            continue
        sensors.append(
            {
                "wheel": wheel,
                "pressure_bar": None if pressure == 0 else pressure / 10,
                "temperature_c": None if temperature == -128 else temperature,
            }
        )
    return tuple(sensors)


def high_precision_coordinates(value: tuple[int, int]) -> tuple[float, float]:
    """Field 73: latitude and longitude in 1e-7 arc-minutes to degrees."""
    return value[0] / 600_000_000, value[1] / 600_000_000


def pitch_roll(value: tuple[int, int]) -> tuple[int, float]:
    """Field 141: pitch in degrees, roll in 1.5-degree steps."""
    return value[0], value[1] * 1.5


def engine_state_rpm(value: tuple[int, int]) -> tuple[int, int | None]:
    """Field 198: refrigerator engine state and RPM (0xFFFF = none)."""
    return value[0], None if value[1] == 0xFFFF else value[1]


def lamps_and_dtc(value: tuple[int, int]) -> tuple[int, int]:
    """Field 204: malfunction lamp bits and the DTC code."""
    return value[0], value[1]
