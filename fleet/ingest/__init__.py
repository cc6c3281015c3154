"""Device ingestion: one TCP listener per protocol, the group-commit writer, the device registry, commands.

Data path: socket bytes → the protocol's :class:`fleet.protocol.base.CodecSession` (pure codec) → its row
source (neutral rows of :mod:`fleet.protocol.rows`) → :class:`fleet.ingest.writer.BatchWriter` (COPY +
INSERT … ON CONFLICT, one transaction for many connections) → COMMIT → ACKs, in order, per connection.
Nothing here is protocol-specific (docs/PROTOCOLS.md, docs/INGEST.md).
"""

from fleet.ingest.service import IngestService

__all__ = ["IngestService"]
