"""FLEX record layouts: a negotiated field mask compiled once into one struct plus post-processing plans."""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from operator import itemgetter
from typing import Any, cast

from .convert import Converter, NoneIfNegative, Scale
from .fields import FIELD_100_SIZES, MAX_FIELD, field_spec
from .records import FlexRecord, new_flex_record

__all__ = [
    "FlexLayout",
    "LayoutError",
    "fields_from_mask",
    "layout_for_fields",
    "layout_for_mask",
    "mask_from_fields",
]

# Mask sizes of the three structure versions (DOC p. 18): FLEX 1.0 = 69 bits, 2.0 = 122, 3.0 = 255.
FULL_MASK_BITS = {10: 69, 20: 122, 30: 255}


class LayoutError(ValueError):
    """A mask or a value set that cannot be turned into a FLEX layout or record."""


def fields_from_mask(mask: bytes, bit_count: int | None = None) -> tuple[int, ...]:
    """Return the field numbers selected by a FLEX bit mask (MSB of byte 0 = field 1).

    Bits beyond ``bit_count`` (the negotiated data_size) are ignored; a set bit beyond field 255 cannot
    be framed (its size is unknown) and raises :class:`LayoutError`.
    """
    limit = len(mask) * 8 if bit_count is None else min(bit_count, len(mask) * 8)
    selected = []
    for position in range(limit):
        if mask[position >> 3] & (0x80 >> (position & 7)):
            if position >= MAX_FIELD:
                raise LayoutError(f"mask selects field {position + 1}, beyond the known {MAX_FIELD}")
            selected.append(position + 1)
    return tuple(selected)


def mask_from_fields(fields: Iterable[int], bit_count: int = 255) -> bytes:
    """Return the FLEX bit mask (ceil(bit_count / 8) bytes) selecting ``fields``."""
    mask = bytearray((bit_count + 7) // 8)
    for number in fields:
        if not 1 <= number <= bit_count:
            raise LayoutError(f"field {number} does not fit a {bit_count}-bit mask")
        mask[(number - 1) >> 3] |= 0x80 >> ((number - 1) & 7)
    return bytes(mask)


def _getter(slots: list[int]) -> Callable[[tuple[Any, ...]], tuple[Any, ...]]:
    """Return a function picking ``slots`` out of a tuple, always as a tuple."""
    if not slots:
        return lambda values: ()
    if len(slots) == 1:
        only = slots[0]
        return lambda values: (values[only],)
    return itemgetter(*slots)


class _Source:
    """Python source built for one layout, with the constants it refers to (compiled by :func:`_compile`)."""

    def __init__(self) -> None:
        self.namespace: dict[str, Any] = {}

    def const(self, value: Any) -> str:
        """Return the name under which ``value`` is visible to the generated code."""
        name = f"_k{len(self.namespace)}"
        self.namespace[name] = value
        return name


def _convert_source(source: _Source, converter: Converter, value: str, single: bool) -> str:
    """Return an expression applying ``converter`` to the expression ``value``.

    The conversions of the common converters are written out (a function call per field costs more than
    the arithmetic); they are the expressions of ``Scale.compiled`` and ``NoneIfNegative.__call__``, and
    a test holds the result equal to the converters'. Anything else is called.
    """
    if single and type(converter).compiled is Scale.compiled:
        assert isinstance(converter, Scale)
        none_if, div, mul = converter.none_if, converter.div, converter.mul
        if div is not None:
            converted = f"{value} / {source.const(div)}"
        elif mul is not None:
            converted = f"{value} * {source.const(mul)}"
        else:
            converted = value
        if none_if is None:
            return converted
        return f"(None if {value} == {source.const(none_if)} else {converted})"
    if single and type(converter) is NoneIfNegative:
        return f"(None if {value} < 0 else {value})"
    return f"{source.const(converter.compiled())}({value})"


def _attribute_items(
    source: _Source, plan: list[tuple[tuple[str, ...], int, int, Converter | None]]
) -> list[str] | None:
    """Return the ``"name": expression`` items of a dict display building FlexRecord.attributes from the
    value tuple ``v``, or None when a field's names do not match its value count (no compiled form).

    A dict display with a repeated key keeps the first position and the last value, as the assignments
    it replaces did; the items come in the order the attributes always had: single values without a
    converter, single values with one, then multi-value and multi-name fields.
    """
    plain: list[str] = []
    converted: list[str] = []
    general: list[str] = []
    for names, start, count, converter in plan:
        value = f"v[{start}]" if count == 1 else f"v[{start}:{start + count}]"
        if len(names) == 1:
            if converter is None:
                (plain if count == 1 else general).append(f"{names[0]!r}: {value}")
            else:
                expression = _convert_source(source, converter, value, count == 1)
                (converted if count == 1 else general).append(f"{names[0]!r}: {expression}")
            continue
        if converter is None:
            if count != len(names):
                return None
            general.extend(f"{name!r}: v[{start + i}]" for i, name in enumerate(names))
            continue
        parts = f"_t{start}"
        expression = _convert_source(source, converter, value, count == 1)
        general.append(f"{names[0]!r}: ({parts} := {expression})[0]")
        general.extend(f"{name!r}: {parts}[{i}]" for i, name in enumerate(names[1:], 1))
    return plain + converted + general


def _compile(source: _Source, text: str, name: str) -> Callable[..., Any]:
    """Compile the source of one function and return it."""
    namespace = dict(source.namespace)
    exec(compile(text, f"<flex layout {name}>", "exec"), namespace)
    return cast(Callable[..., Any], namespace[name])


@dataclass(frozen=True, slots=True)
class _Plans:
    """Precompiled recipes for FlexRecord.fields and FlexRecord.attributes."""

    scalar_numbers: tuple[int, ...]  # fields with one value
    scalar_get: Callable[[tuple[Any, ...]], tuple[Any, ...]]
    multi_fields: tuple[tuple[int, int, int], ...]  # (number, start, count) of multi-value fields
    plain_names: tuple[str, ...]  # attributes taken as they are
    plain_get: Callable[[tuple[Any, ...]], tuple[Any, ...]]
    converted_names: tuple[str, ...]  # one value, one name, one converter
    converters: tuple[Callable[[Any], Any], ...]
    converted_get: Callable[[tuple[Any, ...]], tuple[Any, ...]]
    general: tuple[tuple[tuple[str, ...], int, int, Callable[[Any], Any] | None], ...]  # everything else
    # The attributes as one generated function of the value tuple: a single dict display (None when the
    # layout has no compiled form; FlexRecord then builds them from the recipes above). The items and
    # their constants are kept for code that builds more than the attributes in one function (rows.py).
    attributes: Callable[[tuple[Any, ...]], dict[str, Any]] | None
    attribute_items: tuple[str, ...] | None
    attribute_namespace: dict[str, Any]

    @classmethod
    def build(
        cls,
        spans: list[tuple[int, int, int]],
        plan: list[tuple[tuple[str, ...], int, int, Converter | None]],
    ) -> _Plans:
        scalar = [(number, start) for number, start, count in spans if count == 1]
        plain = [
            (names[0], start)
            for names, start, count, conv in plan
            if count == 1 and conv is None and len(names) == 1
        ]
        converted = [
            (names[0], start, conv)
            for names, start, count, conv in plan
            if count == 1 and conv is not None and len(names) == 1
        ]
        general = [
            (names, start, count, None if conv is None else conv.compiled())
            for names, start, count, conv in plan
            if not (count == 1 and len(names) == 1)
        ]
        source = _Source()
        items = _attribute_items(source, plan)
        attributes = None
        if items is not None:
            attributes = _compile(
                source, "def attributes(v):\n    return {" + ", ".join(items) + "}\n", "attributes"
            )
        return cls(
            scalar_numbers=tuple(number for number, _ in scalar),
            scalar_get=_getter([start for _, start in scalar]),
            multi_fields=tuple(span for span in spans if span[2] != 1),
            plain_names=tuple(name for name, _ in plain),
            plain_get=_getter([start for _, start in plain]),
            converted_names=tuple(name for name, _, _ in converted),
            converters=tuple(conv.compiled() for _, _, conv in converted),
            converted_get=_getter([start for _, start, _ in converted]),
            general=tuple(general),
            attributes=attributes,
            attribute_items=None if items is None else tuple(items),
            attribute_namespace=source.namespace,
        )


@dataclass(frozen=True, slots=True)
class FlexLayout:
    """The record structure for one negotiated field set; decodes and encodes records.

    Layouts are cached per (fields, field-100 size): obtain them with :func:`layout_for_mask` or
    :func:`layout_for_fields` rather than constructing them directly.
    """

    fields: tuple[int, ...]
    field100_size: int = 2
    size: int = field(init=False, compare=False)
    struct: struct.Struct = field(init=False, compare=False, repr=False)
    # slot[n] = position of field n's first value in an unpacked record tuple, -1 when absent.
    slot: tuple[int, ...] = field(init=False, compare=False, repr=False)
    # (field number, first slot, value count) per present field.
    spans: tuple[tuple[int, int, int], ...] = field(init=False, compare=False, repr=False)
    # How FlexRecord.fields / .attributes are built, split by shape so that the common cases (one value,
    # one name) run through itemgetter/zip in C instead of a Python loop per field.
    plans: _Plans = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.field100_size not in FIELD_100_SIZES:
            raise LayoutError(f"field 100 size must be one of {FIELD_100_SIZES}")
        if list(self.fields) != sorted(set(self.fields)) or not all(1 <= n <= MAX_FIELD for n in self.fields):
            raise LayoutError("fields must be distinct, increasing and within 1..255")
        slot = [-1] * (MAX_FIELD + 1)
        spans = []
        plan = []
        fmt = ["<"]
        position = 0
        for number in self.fields:
            spec = field_spec(number, self.field100_size)
            count = spec.item_count
            slot[number] = position
            spans.append((number, position, count))
            if not spec.core:
                plan.append((spec.names, position, count, spec.converter))
            fmt.append(spec.fmt)
            position += count
        compiled = struct.Struct("".join(fmt))
        object.__setattr__(self, "struct", compiled)
        object.__setattr__(self, "size", compiled.size)
        object.__setattr__(self, "slot", tuple(slot))
        object.__setattr__(self, "spans", tuple(spans))
        object.__setattr__(self, "plans", _Plans.build(spans, plan))

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle as "the cached layout for these fields" (the compiled parts are rebuilt, not copied)."""
        return (layout_for_fields, (self.fields, self.field100_size))

    def mask(self, bit_count: int | None = None) -> bytes:
        """Return the bit mask selecting this layout's fields (default: the smallest FLEX version's size)."""
        if bit_count is None:
            last = self.fields[-1] if self.fields else 0
            bit_count = next(bits for bits in (69, 122, 255) if bits >= last)
        return mask_from_fields(self.fields, bit_count)

    def decode(self, data: bytes, offset: int = 0, count: int = 1) -> list[FlexRecord]:
        """Decode ``count`` consecutive records starting at ``offset`` (the caller checks the length)."""
        size = self.size
        end = offset + count * size
        if size == 0:
            return [FlexRecord(self, (), b"") for _ in range(count)]
        make = new_flex_record
        return [
            make(self, values, data[start : start + size])
            for values, start in zip(
                self.struct.iter_unpack(memoryview(data)[offset:end]), range(offset, end, size), strict=True
            )
        ]

    def decode_one(self, data: bytes, offset: int = 0) -> FlexRecord:
        """Decode the single record at ``offset``."""
        size = self.size
        return new_flex_record(
            self, self.struct.unpack_from(data, offset), bytes(data[offset : offset + size])
        )

    def encode(self, values: Mapping[int, Any]) -> bytes:
        """Encode one record from ``{field number: wire value}``; absent fields are zero.

        Wire values are what :attr:`FlexRecord.fields` returns: int/float, a tuple for multi-part fields,
        bytes for opaque ones. Raises :class:`LayoutError` for values that do not fit their field.
        """
        unknown = set(values) - set(self.fields)
        if unknown:
            raise LayoutError(f"fields {sorted(unknown)} are not in this layout")
        flat: list[Any] = []
        for number, _start, count in self.spans:
            value = values.get(number)
            if value is None:
                spec = field_spec(number, self.field100_size)
                value = struct.unpack("<" + spec.fmt, bytes(spec.size))
                flat.extend(value)
            elif count == 1:
                flat.append(value)
            else:
                if len(value) != count:
                    raise LayoutError(f"field {number} needs {count} values, got {len(value)}")
                flat.extend(value)
        try:
            return self.struct.pack(*flat)
        except struct.error as err:
            raise LayoutError(f"value out of range for the layout: {err}") from err


@lru_cache(maxsize=512)
def layout_for_fields(fields: tuple[int, ...], field100_size: int = 2) -> FlexLayout:
    """Return the (cached) layout for a field tuple."""
    return FlexLayout(tuple(fields), field100_size)


@lru_cache(maxsize=512)
def layout_for_mask(mask: bytes, bit_count: int | None = None, field100_size: int = 2) -> FlexLayout:
    """Return the (cached) layout for a negotiated mask, e.g. one restored from storage for a redecode."""
    return layout_for_fields(fields_from_mask(bytes(mask), bit_count), field100_size)
