"""docs/can.md documents every signal name the built-in sources can produce."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Any

import cantools

from fleet.can import flex_can_signals

DOC = Path(__file__).parents[2] / "docs" / "can.md"
# DM1 and VW helper signals that the decoder folds into other names.
HELPERS = {
    "protect_lamp_flash",
    "amber_warning_lamp_flash",
    "red_stop_lamp_flash",
    "mil_lamp_flash",
    "dtc_spn_low",
    "dtc_spn_high",
    "dtc_conversion_method",
    "pid",
}
DERIVED = {"axle_weight_<n>", "dtc_spn", "dtc_occurrence_count", "fms_sw_version"}


def documented() -> set[str]:
    return set(re.findall(r"`([a-z0-9_<>]+)`", DOC.read_text(encoding="utf-8")))


def test_built_in_dbc_signals_are_documented() -> None:
    names: set[str] = set(DERIVED)
    for dbc in ("j1939_fms.dbc", "obd2_mode01.dbc"):
        text = resources.files("fleet.can.dbc").joinpath(dbc).read_text(encoding="utf-8")
        db = cantools.database.load_string(text, database_format="dbc")
        names |= {s.name for m in db.messages for s in m.signals}  # type: ignore[union-attr]
    assert names - HELPERS - documented() == set()


def test_flex_signals_are_documented() -> None:
    fields: dict[int, Any] = {n: None for n in [*range(53, 70), *range(201, 205)]}
    fields[53] = {"litres": 1.0}
    signals = [*flex_can_signals(fields), *flex_can_signals({203: 0, 204: (0, 1)})]
    names = {re.sub(r"^axle_weight_\d+$", "axle_weight_<n>", s.name) for s in signals}
    names.add("adblue_level_volume")
    assert names - documented() == set()
