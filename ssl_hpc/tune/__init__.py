"""Hyperparameter sweeps and the augmentation ablation on Ray Tune (see `run.sweep`)."""

from .space import SweepConfig, ablation_subsets, load_sweep, parse_sweep, subset_label

__all__ = ["SweepConfig", "ablation_subsets", "load_sweep", "parse_sweep", "subset_label"]
