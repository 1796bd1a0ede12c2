"""Token mixing: ResMLP's replacement for self-attention.

One ``max_positions x max_positions`` matrix A (plus a bias of length ``max_positions``) mixes the sequence
axis, identically for every channel: ``out[t] = sum_s A[t, s] * x[s] + b[t]``. A batch of length L uses the
top-left ``L x L`` block. In the decoder A is lower-triangular, so position t only sees positions <= t.

Inputs are time-first (T x B x C), fairseq's layout, which makes the whole layer a single GEMM:
``A[:L, :L] @ x.view(L, B * C)``.

Decoding keeps the layer's past (normalised) inputs in a buffer laid out batch-first (B x capacity x C): a step
writes position t in place and applies row t of A to the first t + 1 positions, with no concatenation and no
value read back from the device.

How A is parameterised (``--token-mixing-matrix``):

* ``full`` (the paper): a free ``max_positions x max_positions`` matrix, one weight per pair of absolute positions.
* ``toeplitz``: shift-invariant, ``A[t, s] = w[t - s]``: one weight per relative offset (2P - 1 in the encoder, P in
  the causal decoder). Far fewer parameters, and nothing tied to absolute positions; the bias stays per position.
* ``full_plus_toeplitz``: the sum of both, the Toeplitz part starting at zero.

``--token-mixing-dropout`` drops entries of A itself while training (DropConnect on the mixing matrix, scaled by
1 / (1 - p)), a regulariser for the position-specific weights.
"""

import math
from typing import Callable, Dict, Optional

import torch
import torch.nn.functional as F
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


def _is_exporting() -> bool:
    is_exporting = getattr(torch.compiler, "is_exporting", None)  # torch >= 2.7
    return bool(is_exporting and is_exporting())


def _top_left(matrix: Tensor, length: int) -> Tensor:
    """``matrix[:length, :length]``; a copy under torch.export: whether that view is contiguous depends on
    ``length == max_positions``, and the guard export records would refuse the longest source."""
    if _is_exporting():
        index = torch.arange(length, device=matrix.device)
        return matrix.index_select(0, index).index_select(1, index)
    return matrix[:length, :length]


# The --token-mixing-matrix choices.
TOKEN_MIXING_MATRICES = ("full", "toeplitz", "full_plus_toeplitz")


@with_incremental_state
class TokenMixing(nn.Module):
    """Linear map across positions; causal (lower-triangular) when ``causal=True``."""

    def __init__(
        self, max_positions: int, causal: bool, init: str = "linear", matrix: str = "full", dropout: float = 0.0
    ) -> None:
        super().__init__()
        if matrix not in TOKEN_MIXING_MATRICES:
            raise ValueError(f"--token-mixing-matrix must be one of {list(TOKEN_MIXING_MATRICES)}, got {matrix!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"--token-mixing-dropout must be in [0, 1), got {dropout}")
        self.max_positions = max_positions
        self.causal = causal
        self.matrix_type = matrix
        self.dropout = dropout
        self.weight: Optional[nn.Parameter] = None
        self.relative: Optional[nn.Parameter] = None
        if matrix != "toeplitz":
            self.weight = nn.Parameter(torch.empty(max_positions, max_positions))
        if matrix != "full":
            # Offsets t - s, shifted to index ``relative``; the causal decoder only needs t - s >= 0 (the upper
            # triangle is masked, so clamping it to offset 0 is harmless).
            pos = torch.arange(max_positions)
            offsets = pos.unsqueeze(1) - pos.unsqueeze(0)
            if causal:
                offsets = offsets.clamp(min=0)
            else:
                offsets = offsets + max_positions - 1
            self.register_buffer("offsets", offsets, persistent=False)
            self.relative = nn.Parameter(torch.empty(max_positions if causal else 2 * max_positions - 1))
        self.bias = nn.Parameter(torch.empty(max_positions))
        self.reset_parameters(init)

    def reset_parameters(self, init: str) -> None:
        if init not in TOKEN_MIXING_INITS:
            raise ValueError(f"--token-mixing-init must be one of {sorted(TOKEN_MIXING_INITS)}, got {init!r}")
        if self.weight is not None:
            TOKEN_MIXING_INITS[init](self.weight, self.bias)
            if self.causal:
                # The upper triangle never receives a gradient (it is masked in forward); keep it at zero so
                # that the stored matrix is the matrix that is used.
                with torch.no_grad():
                    self.weight.copy_(self.weight.tril())
        if self.relative is not None:
            with torch.no_grad():
                if self.weight is not None:
                    # Added to a full matrix: start at zero, so the sum starts as the full matrix's init.
                    self.relative.zero_()
                else:
                    # Initialise a full matrix the chosen way and keep its first row/column (for the identity:
                    # 1 at offset 0); the distribution of every A[t, s] is then that of the full matrix's.
                    full = torch.empty(self.max_positions, self.max_positions)
                    TOKEN_MIXING_INITS[init](full, self.bias)
                    last = self.max_positions - 1
                    if self.causal:
                        self.relative.copy_(full[:, 0])  # A[t, 0] has offset t
                    else:
                        # offsets -(P-1)..0 from row 0 reversed, 1..P-1 from column 0
                        self.relative.copy_(torch.cat([full[0].flip(0), full[1:, 0]]))
                    assert self.relative.numel() == (last + 1 if self.causal else 2 * last + 1)

    def matrix(self, length: int) -> Tensor:
        """The top-left ``length x length`` block of A (upper triangle not yet masked in the causal case)."""
        w: Optional[Tensor] = None
        if self.weight is not None:
            w = _top_left(self.weight, length)
        if self.relative is not None:
            shifted = self.relative[_top_left(self.offsets, length)]
            w = shifted if w is None else w + shifted
        assert w is not None
        return w

    def _causal_row(self, t: int) -> Tensor:
        """Row ``t`` of the causal A over positions 0..t (1 x (t + 1)), for a step index known on the host."""
        w: Optional[Tensor] = None
        if self.weight is not None:
            w = self.weight[t : t + 1, : t + 1]
        if self.relative is not None:
            shifted = self.relative[: t + 1].flip(0).unsqueeze(0)  # A[t, s] = w[t - s], s = 0..t
            w = shifted if w is None else w + shifted
        assert w is not None
        return w

    def rows(self, index: Tensor, length: int) -> Tensor:
        """Rows ``index`` (a device tensor) of A over the first ``length`` positions, upper triangle not masked."""
        w: Optional[Tensor] = None
        if self.weight is not None:
            w = self.weight.index_select(0, index)[:, :length]
        if self.relative is not None:
            shifted = self.relative[self.offsets.index_select(0, index)[:, :length]]
            w = shifted if w is None else w + shifted
        assert w is not None
        return w

    def extra_repr(self) -> str:
        extra = f", matrix={self.matrix_type}" if self.matrix_type != "full" else ""
        extra += f", dropout={self.dropout}" if self.dropout else ""
        return f"max_positions={self.max_positions}, causal={self.causal}{extra}"

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
        w = self.matrix(length)
        if self.training and self.dropout > 0:
            w = F.dropout(w, self.dropout)
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
        row = self.rows(step, length) * positions.le(step).to(x.dtype)
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
        w = self._causal_row(steps)
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
