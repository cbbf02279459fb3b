"""The lab: whole deployments on one machine, for the demo, the tests, chaos and the benchmark.

Embedded Redis, the emulator-backed local stack, the services `crosslink run` starts, the demo, the
chaos suite with its independent oracle, and the benchmark. Nothing below imports the lab.
"""
