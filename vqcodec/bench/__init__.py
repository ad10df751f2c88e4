"""Rate-distortion benchmarking: vqcodec against classical codecs and published curves.

One module per idea: ``classical`` (JPEG, WebP, AVIF, JPEG 2000, JPEG XL with the settings the
field compares against), ``runner`` (the sweep: every image through every operating point, timed,
one row per image), ``coding_stats`` (bits per code of each level against the prior's
cross-entropy and the codes' unigram entropy), ``perceptual`` (the optional perceptual metric,
ColorVideoVDP), ``bd`` (Bjøntegaard deltas), ``report`` (CompressAI result files, raw rows, the
Markdown summary) and ``plot`` (the PNG). ``vqcodec benchmark`` strings them together. ``import
vqcodec`` never imports this package; matplotlib, bjontegaard and cvvdp come with the optional
extra ``vqcodec[bench]``.
"""
