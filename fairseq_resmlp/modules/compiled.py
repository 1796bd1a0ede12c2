"""Training-time ``torch.compile`` of a stack's layers (``--compile-layers``).

Why: on a GPU, fairseq-train of this model is bound by the host, not the device: every element-wise op of a layer
(normalisation, masking, bias, dropout, LayerScale, residual, GELU) is a separate kernel launch with Python and
dispatcher overhead in front of it, forward and backward. Compiling a layer fuses those chains into a few
generated kernels around the matrix products, and the backward pass with them (AOTAutograd).

What it does not change: the parameters and their names (the compiled callables are kept outside the module tree,
so state dicts and checkpoints are those of the eager model), evaluation and decoding (only training-mode,
non-incremental calls are compiled), and the results up to floating-point reassociation (the tests compare
outputs and gradients with the eager layers). Shapes are compiled as dynamic, so variable batch sizes and
sentence lengths do not recompile.

Where compilation is unavailable (no C compiler for Inductor on a CPU, an unsupported platform) the first call
warns once and the stack runs eagerly from then on.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, List, Optional

import torch
from torch import nn

logger = logging.getLogger(__name__)

# torch.compile's backend; the tests use "aot_eager" (the same tracing and autograd, no code generation).
COMPILE_BACKEND = "inductor"


class CompiledLayers:
    """The layers of ``layers`` as compiled callables, used for training-mode calls when ``enabled``.

    A plain object, not an ``nn.Module``: the compiled wrappers must not appear in ``state_dict()``.
    """

    def __init__(self, layers: nn.ModuleList, enabled: bool) -> None:
        self.layers = layers
        self.enabled = enabled
        self._compiled: Optional[List[Callable[..., Any]]] = None
        self.compiled_calls = 0  # for the tests: how many layer calls went through compiled code

    def __call__(self, index: int, training: bool) -> Callable[..., Any]:
        """The callable to run layer ``index`` with: compiled for training when enabled, else the layer."""
        layer = self.layers[index]
        if not (self.enabled and training):
            return layer
        if self._compiled is None:
            self._compiled = [torch.compile(m.forward, dynamic=True, backend=COMPILE_BACKEND) for m in self.layers]
        compiled = self._compiled[index]

        def run(*args: Any, **kwargs: Any) -> Any:
            try:
                out = compiled(*args, **kwargs)
            except Exception as e:  # noqa: BLE001 - any compiler failure: fall back, once, loudly
                if not self.enabled:
                    raise
                self.enabled = False
                cause = getattr(e, "inner_exception", None) or e.__cause__ or e  # Dynamo wraps the backend error
                lines = str(cause).strip().splitlines()
                logger.warning(
                    "--compile-layers: torch.compile is unavailable here (%s: %s); training continues without it",
                    type(cause).__name__,
                    lines[0] if lines else "",
                )
                return layer(*args, **kwargs)
            self.compiled_calls += 1
            return out

        return run
