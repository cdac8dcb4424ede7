"""Test support: servers and helpers shared by tests, benchmarks and scripts."""
