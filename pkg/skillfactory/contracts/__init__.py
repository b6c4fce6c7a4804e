"""Protobuf contracts: code generation from `proto/` and conversions from library types."""
