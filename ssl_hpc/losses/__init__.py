"""Contrastive losses: InfoNCE (MoCo) and NT-Xent (SimCLR)."""

from .contrastive import info_nce, info_nce_logits, nt_xent

__all__ = ["info_nce", "info_nce_logits", "nt_xent"]
