"""Helpers several test folders share (import as `support.<module>`: tests/ is on sys.path)."""
