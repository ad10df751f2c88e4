"""Named training settings: the exact options behind each shipped model (docs/models.md).

``vqcodec train vqvae --preset NAME`` (and ``train prior --preset NAME --level L``) starts from the
preset's options; an option given on the command line still wins. A preset is plain data, so the
commands that made a shipped model can be read here, rerun, and changed one option at a time.
"""

from __future__ import annotations

from vqcodec.errors import VQCodecError

# stage -> options, by preset. Option names are the command's (``--res-blocks`` -> "res_blocks").
PRESETS: dict[str, dict[str, dict[str, object]]] = {
    # The first shipped model: VQ-VAE-2 paper sizes; stage 1 was trained on one GPU.
    "paper": {
        "vqvae": dict(hidden=128, res_channels=64, res_blocks=2, num_codes=512, code_dim=64, levels="2",
                      crop=128, batch=64, steps=8000, lr=3e-4),
        "prior-top": dict(channels=64, layers=6, attention_every=3, heads=2, dropout=0.1, out_blocks=2, tile=32),
        "prior-bottom": dict(channels=48, layers=5, attention_every=0, cond_channels=64, cond_blocks=3,
                             dropout=0.1, out_blocks=2, tile=32),
    },
    # The paper model's decoder grown by two residual blocks and fine-tuned; its codes, priors and
    # bits are the paper model's (export --refit-of paper).
    "paper-refit": {
        "vqvae": dict(refit="paper", extra_blocks=2, crop=128, batch=16, steps=3200, lr=2e-4),
    },
    # paper-refit's decoder grown by two more residual blocks and fine-tuned again at a lower learning
    # rate, on other crops (seed 1); still the paper model's codes, priors and bits.
    "paper-refit2": {
        "vqvae": dict(refit="paper-refit", extra_blocks=2, crop=128, batch=16, steps=2500, lr=1e-4, seed=1),
    },
    # paper-refit2's decoder fine-tuned for the ladder's rungs above scale 1 (rung_loss): the error
    # is measured after the resize back, so it learns what the rung keeps. Same codes, priors, bits.
    "paper-up": {
        "vqvae": dict(refit="paper-refit2", rung_scales="1.25,1.5,1.75", crop=96, batch=18, steps=1500,
                      lr=1e-4, seed=2, validate_every=400, checkpoint_every=200),
    },
    # paper-refit2 with a learned upscaler (vqcodec/vqvae/upscaler.py) for the rungs below scale 1,
    # trained alone: the decoder and everything before it stay paper-refit2's. Same codes, priors, bits.
    "paper-down": {
        "vqvae": dict(refit="paper-refit2", rung_scales="0.5,0.625,0.75,0.875", upscaler=32, upscaler_layers=5,
                      crop=128, batch=16, steps=2000, lr=1e-3, seed=3, validate_every=500, checkpoint_every=250),
    },
    # paper-up-wf's bottom prior cut to its first 4 of 5 layers and fine-tuned on the codes of the
    # rungs above scale 1 (--codes of extract-codes --scale 1.25, 1.5 and 1.75): a fifth fewer
    # multiply-adds and 31 fewer steps a tile where the ladder codes the most codes.
    "paper-up-b4": {
        "prior-bottom": dict(refit="paper-up-wf", layers=4, batch=32, steps=2400, lr=2e-4, seed=4,
                             validate_every=400, checkpoint_every=200),
    },
    # paper-up-b4's top prior cut to its first 5 of 6 layers (one of its two attention layers goes)
    # and fine-tuned on the same codes: a 16x16 top tile in 106 wavefront steps, not 121.
    "paper-up-t5": {
        "prior-top": dict(refit="paper-up-b4", layers=5, batch=32, steps=2400, lr=2e-4, seed=5,
                          validate_every=400, checkpoint_every=200),
    },
    # paper-up-t5's bottom prior cut to its first 3 of 4 layers and fine-tuned on the same codes, for
    # quality 8 alone: 156 wavefront steps a 32x32 tile, not 187, for about 0.5 % more bits.
    "paper-up-b3": {
        "prior-bottom": dict(refit="paper-up-t5", layers=3, batch=32, steps=1200, lr=2e-4, seed=6,
                             validate_every=400, checkpoint_every=200),
    },
    # paper-refit2's whole stage 1 trained for rate and pixels (docs/models.md, issue 31): the codewords
    # fixed, each latent pulled toward the cheapest of its 8 nearest codewords at the default price per
    # level, the fast ladder's priors (--prior-top, --prior-bottom: their float runs) pricing the codes.
    "rate1": {
        "vqvae": dict(finetune="paper-refit2", fixed_codebooks=True, crop=128, batch=16, steps=8000, lr=1e-4,
                      seed=31, validate_every=1000, checkpoint_every=250),
    },
    # Only the paper model's top level (1/8 resolution): the decoder learns to do without the bottom.
    "top-only": {
        "vqvae": dict(refit="paper", drop_levels=1, extra_blocks=2, crop=128, batch=16, steps=2500, lr=5e-4),
    },
}


def preset_options(name: str, stage: str) -> dict[str, object]:
    """The options of preset ``name`` for ``stage`` ("vqvae", "prior-top", "prior-middle", "prior-bottom")."""
    if name not in PRESETS:
        raise VQCodecError(f"unknown preset '{name}' (known: {', '.join(PRESETS)})")
    if stage not in PRESETS[name]:
        have = ", ".join(PRESETS[name])
        raise VQCodecError(f"preset '{name}' has no settings for {stage} (it has: {have})")
    return dict(PRESETS[name][stage])
