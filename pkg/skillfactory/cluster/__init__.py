"""The local cluster: Redis and every service as supervised processes on loopback."""
