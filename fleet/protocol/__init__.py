"""Device protocol codecs: pure bytes-in, records-and-replies-out packages (no sockets, no database)."""
