"""Simulated trackers (device side): `fleet simulate <protocol>`, load tests, crash tests and demos.

The engine (:mod:`fleet.simulate.engine`) is protocol-neutral: black boxes recording at a rate,
connections, uploads that wait for each acknowledgement, reconnects and resends. What a device of a
given protocol sends and expects comes from that protocol package's ``simulation`` module.
"""

from fleet.simulate.engine import SimulationConfig, SimulationResult, run_simulation, run_simulation_blocking

__all__ = ["SimulationConfig", "SimulationResult", "run_simulation", "run_simulation_blocking"]
