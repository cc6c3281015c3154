"""HTTP API (FastAPI): app factory, lifespan, routes."""
