"""WireGuard for the pull vehicles (seed 001): server 10.0.0.1, vehicles from 10.0.0.11, one peer each."""
