"""Generated from proto/skillfactory/v1 by `make proto`; do not edit."""
