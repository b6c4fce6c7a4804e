"""The stages of a run, each a small class over the library: data (stage 1), more to come."""
