"""The registry of device protocols: every package under ``fleet/protocol/`` that exposes ``PROTOCOL``.

Adding a protocol is adding a package (docs/PROTOCOLS.md): nothing here or in ``fleet/ingest`` changes.
Packages are found once, in name order; a package without ``PROTOCOL`` (none today) is simply not a
device protocol.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache
from typing import Any

import fleet.protocol
from fleet.errors import ConfigError
from fleet.protocol.base import ProtocolSpec

__all__ = ["get_protocol", "listen_port", "protocol_for_archive", "protocols"]


@cache
def protocols() -> dict[str, ProtocolSpec]:
    """Return every registered protocol by name (``navtelecom``, ``teltonika``, ...)."""
    found: dict[str, ProtocolSpec] = {}
    for module in sorted(pkgutil.iter_modules(fleet.protocol.__path__), key=lambda m: m.name):
        if not module.ispkg:
            continue
        package = importlib.import_module(f"fleet.protocol.{module.name}")
        spec = getattr(package, "PROTOCOL", None)
        if isinstance(spec, ProtocolSpec):
            if spec.name in found:
                raise ConfigError(f"two protocol packages are both named {spec.name!r}")
            found[spec.name] = spec
    return found


def get_protocol(name: str) -> ProtocolSpec:
    """Return one protocol by name; ConfigError names the known ones."""
    known = protocols()
    try:
        return known[name]
    except KeyError:
        raise ConfigError(f"unknown device protocol {name!r}; known: {', '.join(known)}") from None


def protocol_for_archive(label: str) -> ProtocolSpec | None:
    """Return the protocol that writes stored frames labelled ``label`` (``raw_frames.protocol``)."""
    for spec in protocols().values():
        if spec.owns_archive(label):
            return spec
    return None


def listen_port(spec: ProtocolSpec, settings: Any) -> int:
    """Return the configured TCP port of a protocol (0: its listener is disabled)."""
    port = getattr(settings, spec.port_setting, None)
    if port is None:
        port = dict(getattr(settings, "ingest_ports", {}) or {}).get(spec.name, spec.default_port)
    return int(port)
