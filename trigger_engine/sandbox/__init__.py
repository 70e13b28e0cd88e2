"""Test doubles and the demo: never imported by the daemon.

The embedded Meet Alfred simulator (start reading at :mod:`trigger_engine.sandbox.simulator`)
serves the demo, the tests and the benchmarks; :mod:`trigger_engine.sandbox.demo` is
``trigger-engine demo``.
"""

from trigger_engine.sandbox.faults import Fault
from trigger_engine.sandbox.server import SimulatorThread, make_app, serve_forever, start
from trigger_engine.sandbox.simulator import Simulator

__all__ = ["Fault", "Simulator", "SimulatorThread", "make_app", "serve_forever", "start"]
