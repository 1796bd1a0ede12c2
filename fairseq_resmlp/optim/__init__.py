"""Optimizers registered by the plugin (offered next to fairseq's, never imposed)."""

from .fused_adam import FairseqFusedAdam, MasterWeightAdamW

__all__ = ["FairseqFusedAdam", "MasterWeightAdamW"]
