"""Training: the shared loop, image crops, code datasets, stage-1 and prior training, export and
evaluation. Never imported by ``import vqcodec``: compressing needs none of it."""
