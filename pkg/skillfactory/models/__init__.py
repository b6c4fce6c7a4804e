"""Models: short names, offline preparation of the base model, and tiny config-built models."""
