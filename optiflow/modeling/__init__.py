"""Models: the families and their preprocessing, the PyTorch MLP, candidates on disk, tuning and compression."""
