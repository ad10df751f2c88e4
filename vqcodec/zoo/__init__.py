"""Codec models: model files and fingerprints, the loaded codec model, the registry and the
shipped weights."""
