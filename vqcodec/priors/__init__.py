"""Stage 2: priors over code maps (float PixelCNN, its integer twin, the contract and registry)."""
