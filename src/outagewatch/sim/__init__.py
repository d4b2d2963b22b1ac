"""Simulation for the demo, the tests and the benchmarks (never imported by the runtime
except the demo driver): `simulate` makes traffic with outages, `scenarios` one event stream
per cause and per look-alike."""
