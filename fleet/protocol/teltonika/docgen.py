"""Render docs/teltonika_io.md from the IO element table.

Run ``python -m fleet.protocol.teltonika.docgen > docs/teltonika_io.md``; a test fails when the committed
document differs from this output.
"""

from __future__ import annotations

from .io_table import IO_ELEMENTS, IoSpec

_HEADER = """\
# Teltonika AVL IO elements

Generated from `fleet/protocol/teltonika/io_table.py` by `python -m fleet.protocol.teltonika.docgen`;
do not edit by hand (a test compares this file with the generator's output).

How a record's IO elements are stored (`positions.attributes`, see docs/PROTOCOLS.md):

* Each known element becomes an attribute under its **name**: the raw big-endian wire value, read as
  two's complement when **signed**, times **scale**, in **unit**. Unknown elements are kept raw as
  `io<id>` (bytes as hex).
* **no reading** values make the attribute `null`, with the raw code in `<name>_error`.
* Variable-length (NX, Codec 8E) elements: ASCII ones as text, the others as hex.
* **CAN** elements also go to `can_data` (one row per record holding its signals) under the canonical signal
  names of docs/can.md (source `TELTONIKA:IO<id>`), converted to the canonical unit.
* **alarm** elements make the record an `events` row (`alarm`) when they triggered it with a non-zero
  value; records of priority 2 (panic) are events too.
* The IDs are those of the FMB/FMC/FMM ("FMBXXX") family. Other families (FMx6, TAT/TMT/TFT) reuse
  numbers for other quantities; their raw frames are kept, so they can be decoded again with their own
  table later (`fleet redecode`).

| id | name | bytes | signed | scale | unit | no reading | CAN signal | alarm | meaning |
|---|---|---|---|---|---|---|---|---|---|
"""


def _cell(text: object) -> str:
    value = "" if text is None else str(text)
    return value.replace("|", "\\|") if value else "—"


def _row(spec: IoSpec) -> str:
    can = ""
    if spec.can is not None:
        name, unit, factor = spec.can
        can = f"`{name}` ({unit or '—'}{'' if factor == 1.0 else f', ×{factor:g}'})"
    if spec.can_bits:
        can = ", ".join(f"`{name}` (0x{mask:X})" for mask, name in spec.can_bits)
    size = "var" if spec.size == 0 else spec.size
    missing = ", ".join(str(value) for value in sorted(spec.missing))
    kind = " (text)" if spec.text else ""
    return (
        f"| {spec.id} | `{spec.name}`{kind} | {size} | {'yes' if spec.signed else ''} | "
        f"{_cell('' if spec.scale is None else f'{spec.scale:g}')} | {_cell(spec.unit)} | {_cell(missing)} | "
        f"{_cell(can)} | {'yes' if spec.alarm else ''} | {_cell(spec.meaning)} |"
    )


def render() -> str:
    """Return the Markdown document."""
    return _HEADER + "\n".join(_row(IO_ELEMENTS[number]) for number in sorted(IO_ELEMENTS)) + "\n"


if __name__ == "__main__":  # pragma: no cover - exercised through the doc test
    print(render(), end="")
