"""Survey augmentations: what the representation learns to ignore (see `config` for codes)."""

from .config import CODES, DEFAULT_CODES, AugmentConfig, parse_codes
from .pipeline import Augmenter
from .stats import SurveyStats, survey_stats, view_meta

__all__ = [
    "CODES",
    "DEFAULT_CODES",
    "AugmentConfig",
    "Augmenter",
    "SurveyStats",
    "parse_codes",
    "survey_stats",
    "view_meta",
]
