"""ssl-hpc: self-supervised representation learning on astronomical survey images.

The data flow: survey shards -> reader -> augment -> encoder -> loss;
checkpoint -> embed -> embedding shards -> downstream -> report.
"""

__version__ = "0.1.0"
