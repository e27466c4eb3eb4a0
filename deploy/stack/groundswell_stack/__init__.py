"""Local infrastructure for `make up` and the test suite (no Docker engine needed)."""
