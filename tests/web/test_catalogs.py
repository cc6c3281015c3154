"""Message catalogs and page shells, checked without a browser: every key in all three languages with the
same placeholders, every key the pages use exists, no inline script or event handler (the CSP forbids them)."""

from __future__ import annotations

import re
import string
from pathlib import Path

import pytest

from fleet.web import i18n

WEB = Path(i18n.__file__).parent
TEMPLATES = sorted((WEB / "templates").glob("*.html"))
SCRIPTS = sorted((WEB / "static" / "js").glob("*.js"))
# Keys built at run time from a code the API or the stream sends (t(`status.${state}`) and the like).
DYNAMIC_PREFIXES = ("status.", "live.", "role.", "user.", "source.", "event.", "error.", "field.")


def placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def test_every_language_has_every_key_with_the_same_placeholders() -> None:
    reference = i18n.catalog("en")
    for lang in i18n.LANGUAGES:
        messages = i18n.catalog(lang)
        assert set(messages) == set(reference), f"{lang}: keys differ from en"
        for key, text in messages.items():
            assert text.strip(), f"{lang}: {key} is empty"
            assert placeholders(text) == placeholders(reference[key]), f"{lang}: {key} placeholders differ"


def test_translations_are_translated() -> None:
    """Ukrainian and Russian texts are not English copies (names and units excepted)."""
    en, uk, ru = (i18n.catalog(lang) for lang in ("en", "uk", "ru"))
    same = [key for key in en if en[key] == uk[key] == ru[key] and re.search(r"[a-z]{4}", en[key])]
    assert same == ["app.name"]


def test_every_key_used_by_the_pages_exists() -> None:
    used: set[str] = set()
    call = re.compile(r"""\bt\(\s*["']([a-z_]+\.[a-z0-9_.]+)["']""")
    for path in [*TEMPLATES, *SCRIPTS]:
        used |= set(call.findall(path.read_text(encoding="utf-8")))
    missing = sorted(key for key in used if key not in i18n.catalog("en"))
    assert missing == []
    for prefix in DYNAMIC_PREFIXES:
        assert any(key.startswith(prefix) for key in i18n.catalog("en")), prefix


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.name)
def test_templates_carry_no_inline_code(path: Path) -> None:
    html = path.read_text(encoding="utf-8")
    for tag in re.findall(r"<script\b[^>]*>", html):
        assert "src=" in tag or 'type="application/json"' in tag, tag
    assert not re.search(r"\son[a-z]+\s*=", html), "inline event handler"
    assert "javascript:" not in html


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_scripts_build_no_html_from_data(path: Path) -> None:
    """Our modules never assign innerHTML (names and messages are user data); Leaflet's divIcon gets numbers."""
    code = path.read_text(encoding="utf-8")
    assert ".innerHTML" not in code and "insertAdjacentHTML" not in code and "eval(" not in code


@pytest.mark.parametrize(
    ("cookie", "header", "expected"),
    [
        ("uk", "en-GB,en;q=0.9", "uk"),
        (None, "ru-RU,ru;q=0.9,en;q=0.8", "ru"),
        (None, "de-DE,de;q=0.9,uk;q=0.5", "uk"),
        (None, "en;q=0.1, uk;q=0.9", "uk"),
        ("xx", None, "en"),
        (None, "fr;q=abc", "en"),
    ],
)
def test_language_choice(cookie: str | None, header: str | None, expected: str) -> None:
    assert i18n.choose_language(cookie, header) == expected


def test_translator_falls_back_to_english_then_to_the_key() -> None:
    t = i18n.Translator("uk")
    assert t("nav.fleet") == "Автопарк"
    assert t("fleet.more", count=3).startswith("Ще 3")
    assert t("no.such.key") == "no.such.key"
