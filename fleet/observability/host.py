"""Host gauges read at scrape time: free space of the volumes the server writes to, certificate expiry.

They let the alert rules catch a disk filling up and a certificate about to expire without a node exporter
or a blackbox prober. Labels are the configured volume names and certificate paths (a handful, from
settings). A certificate that cannot be read exports `fleet_tls_certificate_readable 0` (and no expiry).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

import fleet
from fleet.config import Settings


def certificate_expiry(path: Path) -> float:
    """Unix time the first certificate in a PEM file stops being valid (raises OSError/ValueError)."""
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(path.read_bytes())
    return cert.not_valid_after_utc.timestamp()


class HostCollector(Collector):
    def __init__(self) -> None:
        self.volumes: dict[str, Path] = {}
        self.certificates: set[str] = set()

    def watch(self, settings: Settings) -> None:
        """Add the volumes and certificates named by these settings."""
        self.volumes.setdefault("data", settings.data_dir)
        for path in settings.disk_watch_paths:
            self.volumes.setdefault(path, Path(path))
        self.certificates.update(settings.tls_cert_files)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        free = GaugeMetricFamily(
            "fleet_disk_free_bytes", "Free bytes for the server on a volume", labels=["volume"]
        )
        size = GaugeMetricFamily(
            "fleet_disk_size_bytes", "Size of a volume the server writes to", labels=["volume"]
        )
        for name, path in sorted(self.volumes.items()):
            try:
                usage = shutil.disk_usage(path)
            except OSError:
                continue
            free.add_metric([name], usage.free)
            size.add_metric([name], usage.total)
        yield free
        yield size
        expiry = GaugeMetricFamily(
            "fleet_tls_certificate_expiry_timestamp_seconds",
            "Unix time a configured certificate expires",
            labels=["certificate"],
        )
        readable = GaugeMetricFamily(
            "fleet_tls_certificate_readable",
            "1 when a configured certificate could be read",
            labels=["certificate"],
        )
        for cert in sorted(self.certificates):
            try:
                expiry.add_metric([cert], certificate_expiry(Path(cert)))
                readable.add_metric([cert], 1)
            except (OSError, ValueError):
                readable.add_metric([cert], 0)
        yield expiry
        yield readable
        info = GaugeMetricFamily("fleet_build_info", "Version of the running server", labels=["version"])
        info.add_metric([fleet.__version__], 1)
        yield info


HOST = HostCollector()
REGISTRY.register(HOST)
