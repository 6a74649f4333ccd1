"""The runtime: the CGaP hook and training loop, checkpoints, distributed runs, datasets, config, plots."""
