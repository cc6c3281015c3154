"""Operations: maintenance, retention, metrics and other cross-cutting services."""
