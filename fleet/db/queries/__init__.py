"""SQL lives here, one module per resource; every function takes a connection from `Database.tenant`."""
