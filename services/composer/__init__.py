"""The composer service (an importable package so that each service's `__main__` has its own
module name for mypy)."""
