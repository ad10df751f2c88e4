"""Entropy coding: tiles, the range coder driven by integer priors, and the `.vqc` container."""
