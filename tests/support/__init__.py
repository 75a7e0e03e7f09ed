"""Reusable test infrastructure: a fault-injecting WebSocket proxy and the chaos
harness that drives a daemon through it (used by tests and by ``bench``)."""
