"""A physically motivated synthetic SDSS-like survey: the embedded default data set."""

from .config import ANOMALY_KINDS, MORPH_CLASSES, SynthConfig
from .survey import generate_survey

__all__ = ["ANOMALY_KINDS", "MORPH_CLASSES", "SynthConfig", "generate_survey"]
