"""Database access: embedded server, connection pools, tenant context, migrations and queries."""

from fleet.db.database import Database, Tenant

__all__ = ["Database", "Tenant"]
