"""Message catalogs of the web UI: English, Ukrainian and Russian, one JSON file per language.

The catalogs live on the server: templates translate with `t(key)`, and each page hands the whole catalog
of its language to its script (a few kilobytes), so browser code and templates say the same words. English
is the reference: a test checks that every language has exactly its keys and placeholders.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

LANGUAGES: dict[str, str] = {"en": "English", "uk": "Українська", "ru": "Русский"}
DEFAULT_LANGUAGE = "en"
LANG_COOKIE = "fleet_lang"
CATALOG_DIR = Path(__file__).parent / "i18n"


@cache
def catalog(lang: str) -> dict[str, str]:
    """The messages of `lang` (a code of LANGUAGES), read once per process."""
    if lang not in LANGUAGES:
        raise KeyError(f"no catalog for language {lang!r}")
    data: dict[str, str] = json.loads((CATALOG_DIR / f"{lang}.json").read_text(encoding="utf-8"))
    return data


@dataclass(frozen=True, slots=True)
class Translator:
    """`t(key, **values)` for one language; a key missing there falls back to English, then to itself."""

    lang: str

    def __call__(self, key: str, **values: object) -> str:
        text = catalog(self.lang).get(key) or catalog(DEFAULT_LANGUAGE).get(key) or key
        return text.format(**values) if values else text


def choose_language(cookie: str | None, accept_language: str | None) -> str:
    """The reader's language: the remembered choice, else the browser's preference, else English."""
    if cookie in LANGUAGES:
        return cookie
    for lang in _accepted(accept_language or ""):
        if lang in LANGUAGES:
            return lang
    return DEFAULT_LANGUAGE


def _accepted(header: str) -> list[str]:
    """Primary language tags of an Accept-Language header, most preferred first."""
    ranked: list[tuple[float, int, str]] = []
    for position, item in enumerate(header.split(",")[:20]):
        tag, _, params = item.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        primary = tag.strip().split("-")[0].lower()
        if primary and quality > 0:
            ranked.append((-quality, position, primary))
    return [tag for _, _, tag in sorted(ranked)]
