"""Fleet Server: a self-hosted telematics server (Navtelecom NTCB/FLEX, vehicle sync, REST/WebSocket API)."""

__version__ = "0.1.0"
