"""Training criteria registered by the plugin (offered next to fairseq's, never imposed)."""

from .chunked_label_smoothed_cross_entropy import (
    ChunkedCriterionError,
    ChunkedLabelSmoothedCrossEntropyCriterion,
    chunked_label_smoothed_nll_loss,
)

__all__ = ["ChunkedCriterionError", "ChunkedLabelSmoothedCrossEntropyCriterion", "chunked_label_smoothed_nll_loss"]
