"""The ResMLP translation model and its architectures (registered with fairseq on import)."""

from .resmlp import ResMLPCheckpointError, ResMLPModel, count_parameters
from .resmlp_config import ResMLPConfig

__all__ = ["ResMLPCheckpointError", "ResMLPConfig", "ResMLPModel", "count_parameters"]
