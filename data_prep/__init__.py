"""Data preparation for fairseq-resmlp: raw parallel text -> SentencePiece -> fairseq data-bin.

Two front ends share one pipeline (:mod:`data_prep.pipeline`):

* ``python -m data_prep.wmt14``    -- the WMT14 En-De / En-Fr setups from the official archives;
* ``python -m data_prep.parallel`` -- any raw parallel corpus given as train/valid/test prefixes.
"""

from data_prep.errors import DataPrepError

__version__ = "0.1.0"

__all__ = ["DataPrepError", "__version__"]
