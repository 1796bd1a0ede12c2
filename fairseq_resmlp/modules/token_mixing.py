"""Token mixing: ResMLP's replacement for self-attention.

One ``max_positions x max_positions`` matrix A (plus a bias of length ``max_positions``) mixes the sequence
axis, identically for every channel: ``out[t] = sum_s A[t, s] * x[s] + b[t]``. A batch of length L uses the
top-left ``L x L`` block. In the decoder A is lower-triangular, so position t only sees positions <= t.

Inputs are time-first (T x B x C), fairseq's layout, which makes the whole layer a single GEMM:
``A[:L, :L] @ x.view(L, B * C)``.

Decoding keeps the layer's past (normalised) inputs in a buffer laid out batch-first (B x capacity x C): a step
writes position t in place and applies row t of A to the first t + 1 positions, with no concatenation and no
value read back from the device.
"""

import math
from typing import Callable, Dict, Optional

import torch
from fairseq.incremental_decoding_utils import with_incremental_state
from torch import Tensor, nn

IncrementalState = Dict[str, Dict[str, Optional[Tensor]]]


def _init_linear(weight: Tensor, bias: Tensor) -> None:
    # nn.Linear's default: U(-1/sqrt(n), 1/sqrt(n)) for weight and bias.
    bound = weight.size(1) ** -0.5
    nn.init.uniform_(weight, -bound, bound)
    nn.init.uniform_(bias, -bound, bound)


def _init_trunc_normal(weight: Tensor, bias: Tensor) -> None:
    # The official image code (facebookresearch/deit, resmlp_models.py): truncated normal, std 0.02, zero bias.
    nn.init.trunc_normal_(weight, std=0.02)
    nn.init.zeros_(bias)


def _init_xavier(weight: Tensor, bias: Tensor) -> None:
    # timm's mlp_mixer: Xavier-uniform weights, zero bias.
    nn.init.xavier_uniform_(weight)
    nn.init.zeros_(bias)


def _init_identity(weight: Tensor, bias: Tensor) -> None:
    # Start as "no mixing": each block begins as a pure channel MLP and learns to mix.
    nn.init.eye_(weight)
    nn.init.zeros_(bias)


# The --token-mixing-init choices (the config's ChoiceEnum is built from these keys).
TOKEN_MIXING_INITS: Dict[str, Callable[[Tensor, Tensor], None]] = {
    "linear": _init_linear,
    "trunc_normal": _init_trunc_normal,
    "xavier": _init_xavier,
    "identity": _init_identity,
}


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
        if init not in TOKEN_MIXING_INITS:
            raise ValueError(f"--token-mixing-init must be one of {sorted(TOKEN_MIXING_INITS)}, got {init!r}")
        TOKEN_MIXING_INITS[init](self.weight, self.bias)
        if self.causal:
            # The upper triangle never receives a gradient (it is masked in forward); keep it at zero so that
            # the stored matrix is the matrix that is used.
            with torch.no_grad():
                self.weight.copy_(self.weight.tril())

    def extra_repr(self) -> str:
        return f"max_positions={self.max_positions}, causal={self.causal}"

    def forward(
        self,
        x: Tensor,
        padding_mask: Optional[Tensor] = None,
        incremental_state: Optional[IncrementalState] = None,
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
        w = self.weight[:length, :length]
        if self.causal:
            w = w.tril()
        out = torch.addmm(self.bias[:length].unsqueeze(1), w, x.reshape(length, -1))
        return out.view_as(x)

    # Decoding -------------------------------------------------------------------------------------------------

    def step(self, x: Tensor, inputs: Tensor, step: Tensor, length: int) -> Tensor:
        """One fixed-shape decoding step: ``x`` (B x C) is position ``step`` (a 1-element device tensor).

        It is written into ``inputs`` (B x capacity x C, zeros beyond what was written) in place; the output is
        row ``step`` of A over the first ``length`` positions, with the entries after ``step`` masked. Every
        shape depends on ``length`` only, never on the step's value, so the step can be replayed as a CUDA graph.
        """
        inputs.index_copy_(1, step, x.unsqueeze(1))
        positions = torch.arange(length, device=x.device)
        row = self.weight.index_select(0, step)[:, :length] * positions.le(step).to(x.dtype)
        out = torch.matmul(row, inputs[:, :length])  # (1 x L) @ (B x L x C) -> B x 1 x C
        return out.squeeze(1) + self.bias.index_select(0, step)

    def _forward_step(self, x: Tensor, incremental_state: IncrementalState) -> Tensor:
        """One decoding step: ``x`` is 1 x B x C; the buffer holds this layer's inputs at earlier steps.

        Costs O(t * B * C): row t of A applied to the t+1 buffered inputs, nothing of the prefix recomputed.
        The step index lives on the CPU, so reading it never waits for the device.
        """
        assert self.causal, "incremental decoding needs a causal token mixing"
        state = self.get_incremental_state(incremental_state, "cache")
        bsz, dim = x.size(1), x.size(2)
        buffer: Optional[Tensor] = None
        steps = 0
        if state is not None and state.get("inputs") is not None:
            buffer, steps_t = state["inputs"], state["steps"]
            assert buffer is not None and steps_t is not None
            steps = int(steps_t)
        if steps >= self.max_positions:
            raise ValueError(
                f"decoding step {steps} is beyond the token-mixing matrix ({self.max_positions} positions)"
            )
        if buffer is None or buffer.size(1) <= steps:
            # Capacity doubles (amortised O(1) copies), capped at the matrix size; zeros beyond what is written.
            capacity = min(self.max_positions, max(16, 2 ** math.ceil(math.log2(steps + 1))))
            grown = x.new_zeros(bsz, capacity, dim)
            if buffer is not None:
                grown[:, :steps] = buffer[:, :steps]
            buffer = grown
        buffer[:, steps] = x[0]
        w = self.weight[steps : steps + 1, : steps + 1]
        out = torch.matmul(w, buffer[:, : steps + 1]).squeeze(1) + self.bias[steps]
        self.set_incremental_state(
            incremental_state, "cache", {"inputs": buffer, "steps": torch.tensor(steps + 1, dtype=torch.long)}
        )
        return out.unsqueeze(0)

    @torch.jit.export
    def reorder_incremental_state(self, incremental_state: IncrementalState, new_order: Tensor) -> None:
        """Follow beam search: select the buffered inputs of the surviving hypotheses (batch axis 0)."""
        state = self.get_incremental_state(incremental_state, "cache")
        if state is None or state.get("inputs") is None:
            return
        buffer, steps_t = state["inputs"], state["steps"]
        assert buffer is not None and steps_t is not None
        steps = int(steps_t)
        if new_order.numel() == buffer.size(0):
            # Same batch: copy into the same buffer (only the positions written so far).
            buffer[:, :steps] = buffer[:, :steps].index_select(0, new_order)
        else:
            buffer = buffer.index_select(0, new_order)
        self.set_incremental_state(incremental_state, "cache", {"inputs": buffer, "steps": steps_t})
