"""Training data: datasets, transform presets, synthetic data and the dataset download.

Submodules are imported where used: `synth` stays free of torch.
"""
