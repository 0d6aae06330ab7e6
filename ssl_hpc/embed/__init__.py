"""Survey-scale embedding: every galaxy to a vector (MPI ranks, resumable), and the reader
downstream jobs use (`load`)."""

from .run import EmbedOptions, embed_survey
from .store import EmbeddingError, EmbeddingSet, load

__all__ = ["EmbedOptions", "EmbeddingError", "EmbeddingSet", "embed_survey", "load"]
