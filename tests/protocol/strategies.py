"""Hypothesis strategies for FLEX layouts and wire values."""

from __future__ import annotations

import re
import struct
from typing import Any

from hypothesis import strategies as st

from fleet.protocol.navtelecom import FlexLayout, layout_for_fields
from fleet.protocol.navtelecom.fields import field_spec

_CODE = re.compile(r"(\d*)([a-zA-Z?])")


def _item(code: str, count: int) -> st.SearchStrategy[Any]:
    if code == "s":
        return st.binary(min_size=count, max_size=count)
    if code == "f":
        # Wire floats are float32; NaN never equals itself, so it is excluded here (tested separately).
        return st.floats(width=32, allow_nan=False)
    bits = 8 * struct.calcsize("<" + code)
    if code.islower():
        return st.integers(-(1 << (bits - 1)), (1 << (bits - 1)) - 1)
    return st.integers(0, (1 << bits) - 1)


def wire_value(fmt: str) -> st.SearchStrategy[Any]:
    """Return a strategy for one field's wire value (scalar, tuple or bytes), as FlexRecord.fields has it."""
    parts: list[st.SearchStrategy[Any]] = []
    for digits, code in _CODE.findall(fmt):
        count = int(digits or 1)
        if code == "s":
            parts.append(_item(code, count))
        else:
            parts.extend(_item(code, 1) for _ in range(count))
    if len(parts) == 1:
        return parts[0]
    return st.tuples(*parts)


field_sets = st.sets(st.integers(1, 255), min_size=1, max_size=255).map(lambda s: tuple(sorted(s)))


@st.composite
def layouts(draw: st.DrawFn) -> FlexLayout:
    """Return a layout for a random field set and field-100 size."""
    return layout_for_fields(draw(field_sets), draw(st.sampled_from((1, 2))))


@st.composite
def record_values(draw: st.DrawFn, layout: FlexLayout) -> dict[int, Any]:
    """Return wire values for every field of ``layout``."""
    return {n: draw(wire_value(field_spec(n, layout.field100_size).fmt)) for n in layout.fields}
