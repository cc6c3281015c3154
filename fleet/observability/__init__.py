"""Operating the server: business and host gauges for `/metrics`, and the `fleet ops` commands."""
