"""Device ingestion: the TCP listener for trackers, the group-commit writer, the device registry.

Data path: socket bytes → :class:`fleet.protocol.navtelecom.DeviceSession` (pure codec) → rows
(:mod:`fleet.ingest.rows`) → :class:`fleet.ingest.writer.BatchWriter` (COPY + INSERT … ON CONFLICT, one
transaction for many connections) → COMMIT → ACKs, in order, per connection. See docs/INGEST.md.
"""

from fleet.ingest.service import IngestService

__all__ = ["IngestService"]
