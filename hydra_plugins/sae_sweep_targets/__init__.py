"""Hydra plugin: the target-L0 sweeper (Hydra loads sweepers only from `hydra_plugins`)."""
