"""Image loading, datasets, transform presets, synthetic data and the dataset download.

Submodules are imported where used: `files` and `synth` stay free of torch so that
commands with nothing to compute (a re-run of `landmark tag`) start fast.
"""
