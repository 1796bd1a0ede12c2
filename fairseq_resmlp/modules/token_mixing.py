"""Token mixing: ResMLP's replacement for self-attention.

One ``max_positions x max_positions`` matrix A (plus a bias of length ``max_positions``) mixes the sequence
axis, identically for every channel: ``out[t] = sum_s A[t, s] * x[s] + b[t]``. A batch of length L uses the
top-left ``L x L`` block. In the decoder A is lower-triangular, so position t only sees positions <= t.

Inputs are time-first (T x B x C), fairseq's layout, which makes the whole layer a single GEMM:
``A[:L, :L] @ x.view(L, B * C)``.
"""

from typing import Dict, Optional

import torch
from fairseq.incremental_decoding_utils import with_incremental_state
from torch import Tensor, nn

TOKEN_MIXING_INITS = ("linear", "identity")


@with_incremental_state
class TokenMixing(nn.Module):
    """Linear map across positions; causal (lower-triangular) when ``causal=True``."""

    def __init__(self, max_positions: int, causal: bool, init: str = "linear") -> None:
        super().__init__()
        self.max_positions = max_positions
        self.causal = causal
        self.weight = nn.Parameter(torch.empty(max_positions, max_positions))
        self.bias = nn.Parameter(torch.empty(max_positions))
        self.reset_parameters(init)

    def reset_parameters(self, init: str) -> None:
        if init == "linear":
            # nn.Linear's default, as in the image code: U(-1/sqrt(n), 1/sqrt(n)) for weight and bias.
            bound = self.max_positions**-0.5
            nn.init.uniform_(self.weight, -bound, bound)
            nn.init.uniform_(self.bias, -bound, bound)
        elif init == "identity":
            # Start as "no mixing": each block begins as a pure channel MLP and learns to mix.
            nn.init.eye_(self.weight)
            nn.init.zeros_(self.bias)
        else:
            raise ValueError(f"--token-mixing-init must be one of {TOKEN_MIXING_INITS}, got {init!r}")
        if self.causal:
            # The upper triangle never receives a gradient (it is masked in forward); keep it at zero so that
            # the stored matrix is the matrix that is used.
            with torch.no_grad():
                self.weight.copy_(self.weight.tril())

    def extra_repr(self) -> str:
        return f"max_positions={self.max_positions}, causal={self.causal}"

    def _matrix(self, rows: slice, length: int) -> Tensor:
        w = self.weight[rows, :length]
        if self.causal:
            w = w.tril(diagonal=rows.start or 0)
        return w

    def forward(
        self,
        x: Tensor,
        padding_mask: Optional[Tensor] = None,
        incremental_state: Optional[Dict[str, Dict[str, Optional[Tensor]]]] = None,
    ) -> Tensor:
        """Mix ``x`` (T x B x C) across time.

        ``padding_mask`` (B x T, True at padding) must mark trailing positions only: callers left-align
        sentences first so that position 0 is every sentence's first token. Padded inputs are zeroed, so
        they contribute nothing to real positions.
        """
        if incremental_state is not None:
            return self._forward_step(x, incremental_state)
        length = x.size(0)
        if length > self.max_positions:
            raise ValueError(
                f"sequence of {length} positions is longer than the token-mixing matrix "
                f"({self.max_positions}); raise --max-source-positions/--max-target-positions when training"
            )
        if padding_mask is not None:
            x = x.masked_fill(padding_mask.transpose(0, 1).unsqueeze(-1), 0.0)
        w = self._matrix(slice(0, length), length)
        out = torch.addmm(self.bias[:length].unsqueeze(1), w, x.reshape(length, -1))
        return out.view_as(x)

    def _forward_step(
        self, x: Tensor, incremental_state: Dict[str, Dict[str, Optional[Tensor]]]
    ) -> Tensor:
        """One decoding step: ``x`` is 1 x B x C; the cache holds this layer's inputs at earlier steps.

        Costs O(t * B * C): row t of A applied to the t+1 cached inputs, nothing of the prefix recomputed.
        """
        assert self.causal, "incremental decoding needs a causal token mixing"
        state = self.get_incremental_state(incremental_state, "cache")
        prev = state.get("prev_inputs") if state is not None else None
        inputs = x if prev is None else torch.cat([prev, x], dim=0)
        step = inputs.size(0) - 1
        if step >= self.max_positions:
            raise ValueError(
                f"decoding step {step} is beyond the token-mixing matrix ({self.max_positions} positions)"
            )
        self.set_incremental_state(incremental_state, "cache", {"prev_inputs": inputs})
        w = self.weight[step : step + 1, : step + 1]
        out = torch.addmm(self.bias[step : step + 1].unsqueeze(1), w, inputs.reshape(step + 1, -1))
        return out.view_as(x)

    @torch.jit.export
    def reorder_incremental_state(
        self, incremental_state: Dict[str, Dict[str, Optional[Tensor]]], new_order: Tensor
    ) -> None:
        """Follow beam search: select the cached inputs of the surviving hypotheses (batch axis 1)."""
        state = self.get_incremental_state(incremental_state, "cache")
        if state is not None and state.get("prev_inputs") is not None:
            prev = state["prev_inputs"]
            assert prev is not None
            state["prev_inputs"] = prev.index_select(1, new_order)
            self.set_incremental_state(incremental_state, "cache", state)
