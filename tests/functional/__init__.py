"""Functional tests: a real Glance 33 with the stack, real clients."""
