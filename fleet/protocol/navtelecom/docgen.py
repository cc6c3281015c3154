"""Render docs/navtelecom_fields.md from the FLEX field table.

Run ``python -m fleet.protocol.navtelecom.docgen > docs/navtelecom_fields.md``; a test fails when the
committed document differs from this output.
"""

from __future__ import annotations

from .fields import FIELDS, FieldSpec

_HEADER = """\
# Navtelecom FLEX record fields

Generated from `fleet/protocol/navtelecom/fields.py` by `python -m fleet.protocol.navtelecom.docgen`;
do not edit by hand (a test compares this file with the generator's output).

How to read a decoded `FlexRecord`:

* **Core** fields are properties of the record (`record.latitude`, `record.power_v`, ...), None when the
  field is not in the negotiated mask or holds its "not available" value.
* Every other present field appears in `record.attributes` under the name(s) below, converted as shown.
  Fields with two or three names produce several attributes (e.g. a fuel level and its error code).
* `record.fields[number]` always holds the lossless wire value (int, float, tuple for multi-part
  fields, bytes for user parameters) for every field of the mask.
* Sizes are bytes on the wire, little-endian; struct codes are Python `struct` codes. Field 100 is 2
  bytes (DOC v6.x) unless the layout is built with `field100_size=1` (older firmware).
* Fuel sensor values 65500..65535 are error codes (DOC App. Д): the level attribute is None and the
  `_error` attribute carries the code.

| # | size | struct | FLEX | name(s) | unit(s) | conversion / not available | meaning |
|---|---|---|---|---|---|---|---|
"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|") if text else "—"


def _row(spec: FieldSpec) -> str:
    names = ", ".join(f"`{name}`" for name in spec.names)
    if spec.core:
        names += " (core)"
    units = ", ".join(unit or "—" for unit in spec.units)
    if spec.converter is not None:
        conversion = spec.converter.describe()
    elif spec.core:
        conversion = "see meaning"
    elif spec.fmt.endswith("s"):
        conversion = "raw bytes"
    else:
        conversion = "raw"
    return (
        f"| {spec.number} | {spec.size} | `{spec.fmt}` | {spec.version} | {names} | {_cell(units)} | "
        f"{_cell(conversion)} | {_cell(spec.meaning)} |"
    )


def render() -> str:
    """Return the Markdown document."""
    return _HEADER + "\n".join(_row(FIELDS[number]) for number in sorted(FIELDS)) + "\n"


if __name__ == "__main__":  # pragma: no cover - exercised through the doc test
    print(render(), end="")
