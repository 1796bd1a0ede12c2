"""fairseq-resmlp: the ResMLP translation model as a fairseq user-dir plugin.

Use it with ``--user-dir`` pointing at this folder (``fairseq-train data-bin --user-dir fairseq_resmlp
--arch resmlp_6 ...``) or ``import fairseq_resmlp`` in Python; both register the model ``resmlp`` and its
architectures ``resmlp_6``, ``resmlp_12``, ``resmlp_small``, ``resmlp_tiny``, the criterion
``label_smoothed_cross_entropy_chunked`` and the optimizer ``fused_adam``.
"""

from ._compat import CheckpointFileError, allow_fairseq_checkpoint_globals
from .criterions import ChunkedLabelSmoothedCrossEntropyCriterion  # noqa: F401  (registers the criterion)
from .models import ResMLPCheckpointError, ResMLPConfig, ResMLPModel, count_parameters
from .optim import FairseqFusedAdam  # noqa: F401  (registers the optimizer)
from .quantize import quantize_int8

__version__ = "0.1.0"

allow_fairseq_checkpoint_globals()

__all__ = [
    "CheckpointFileError",
    "ResMLPCheckpointError",
    "ResMLPConfig",
    "ResMLPModel",
    "count_parameters",
    "quantize_int8",
    "__version__",
]
