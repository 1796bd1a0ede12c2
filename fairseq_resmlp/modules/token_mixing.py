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
* ``toeplitz_log``: shift-invariant with log-spaced offsets, as T5's relative-position buckets: offsets below 8 have
  a weight each, larger ones share one per bucket, 2 buckets per doubling (8-11, 12-15, 16-22, 23-31, 32-45, ...).
  Long offsets are rare in corpora of short sentences, so their own weights are barely trained; a shared one gets
  the updates of its whole range (18 weights in the causal decoder for 256 positions, 35 in the encoder).

``--token-mixing-mean scalar`` adds a length-normalised average: ``m / n`` to every entry of row t, where n is the
number of positions the row mixes (the sentence's length in the encoder, t + 1 in the causal decoder) and m a learned
scalar per layer that starts at 0. Attention's softmax normalises by length; a Toeplitz row does not, so averaging
a whole sentence or prefix (what a decoder needs to track how much of the source it has covered) is otherwise out of
reach at lengths rarely trained on. In the decoder the term is part of every row of A (the decoding steps get it
for free); in the encoder it depends on each sentence's length, so it is a separate masked mean.

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
TOKEN_MIXING_MATRICES = ("full", "toeplitz", "full_plus_toeplitz", "toeplitz_log")

# The --token-mixing-mean choices.
TOKEN_MIXING_MEANS = ("none", "scalar")

# toeplitz_log: offsets below EXACT_OFFSETS keep a weight each; beyond, BUCKETS_PER_DOUBLING buckets per doubling.
EXACT_OFFSETS = 8
BUCKETS_PER_DOUBLING = 2


def log_buckets(distance: Tensor) -> Tensor:
    """Bucket of every offset ``distance`` >= 0: the offset itself below EXACT_OFFSETS, then
    ``EXACT_OFFSETS + floor(BUCKETS_PER_DOUBLING * log2(distance / EXACT_OFFSETS))``."""
    # float64: the bucket edges at exact powers of two (32, 64, ...) must not round down.
    ratio = distance.clamp(min=EXACT_OFFSETS).double() / EXACT_OFFSETS
    far = EXACT_OFFSETS + torch.floor(BUCKETS_PER_DOUBLING * torch.log2(ratio)).long()
    return torch.where(distance < EXACT_OFFSETS, distance, far)


def relative_index(max_positions: int, causal: bool, logarithmic: bool) -> Tensor:
    """``max_positions x max_positions`` table: the index into the relative weights of every A[t, s].

    The causal decoder only needs t - s >= 0 (the upper triangle is masked, so it is clamped to offset 0); the
    encoder's indices run from the most negative offset (index 0) through offset 0 to the most positive.
    """
    pos = torch.arange(max_positions)
    offsets = pos.unsqueeze(1) - pos.unsqueeze(0)
    if causal:
        offsets = offsets.clamp(min=0)
    magnitude = log_buckets(offsets.abs()) if logarithmic else offsets.abs()
    if causal:
        return magnitude
    return magnitude.max() + offsets.sign() * magnitude


@with_incremental_state
class TokenMixing(nn.Module):
    """Linear map across positions; causal (lower-triangular) when ``causal=True``."""

    def __init__(
        self,
        max_positions: int,
        causal: bool,
        init: str = "linear",
        matrix: str = "full",
        dropout: float = 0.0,
        mean: str = "none",
    ) -> None:
        super().__init__()
        if matrix not in TOKEN_MIXING_MATRICES:
            raise ValueError(f"--token-mixing-matrix must be one of {list(TOKEN_MIXING_MATRICES)}, got {matrix!r}")
        if mean not in TOKEN_MIXING_MEANS:
            raise ValueError(f"--token-mixing-mean must be one of {list(TOKEN_MIXING_MEANS)}, got {mean!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"--token-mixing-dropout must be in [0, 1), got {dropout}")
        self.max_positions = max_positions
        self.causal = causal
        self.matrix_type = matrix
        self.dropout = dropout
        self.weight: Optional[nn.Parameter] = None
        self.relative: Optional[nn.Parameter] = None
        if matrix in ("full", "full_plus_toeplitz"):
            self.weight = nn.Parameter(torch.empty(max_positions, max_positions))
        if matrix != "full":
            # Where every A[t, s] reads its weight in ``relative``: derived, so not saved in checkpoints.
            offsets = relative_index(max_positions, causal, logarithmic=matrix == "toeplitz_log")
            self.register_buffer("offsets", offsets, persistent=False)
            self.relative = nn.Parameter(torch.empty(int(offsets.max()) + 1))
        self.bias = nn.Parameter(torch.empty(max_positions))
        # m of --token-mixing-mean scalar (shape (1,), as fairseq's optimizers and FSDP expect no 0-d parameters).
        self.mean_scale: Optional[nn.Parameter] = nn.Parameter(torch.empty(1)) if mean == "scalar" else None
        self.reset_parameters(init)

    def reset_parameters(self, init: str) -> None:
        if init not in TOKEN_MIXING_INITS:
            raise ValueError(f"--token-mixing-init must be one of {sorted(TOKEN_MIXING_INITS)}, got {init!r}")
        if self.mean_scale is not None:
            with torch.no_grad():
                self.mean_scale.zero_()  # start as the block without the average
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
                    # Initialise a full matrix the chosen way and give each relative weight the entry of A where
                    # its index first occurs (row-major: first row, then first column; for the identity, 1 at
                    # offset 0 only); the distribution of every A[t, s] is then that of the full matrix's.
                    full = torch.empty(self.max_positions, self.max_positions)
                    TOKEN_MIXING_INITS[init](full, self.bias)
                    index = self.offsets.flatten()
                    first = torch.full_like(self.relative, index.numel(), dtype=torch.long)
                    first.scatter_reduce_(0, index, torch.arange(index.numel()), "amin")
                    self.relative.copy_(full.flatten()[first])

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
            shifted = self.relative[self.offsets[t : t + 1, : t + 1]]  # A[t, s] = w[index of t - s], s = 0..t
            w = shifted if w is None else w + shifted
        assert w is not None
        if self.mean_scale is not None:
            w = w + self.mean_scale / (t + 1)
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
        return w + self._prefix_mean(index, w.dtype)

    def _prefix_mean(self, rows: Tensor, dtype: torch.dtype) -> Tensor:
        """The causal --token-mixing-mean term of rows ``rows``: m / (t + 1), a column to add (0 without it)."""
        if self.mean_scale is None:
            return torch.zeros((), dtype=dtype, device=rows.device)
        return self.mean_scale / (rows + 1).to(dtype).unsqueeze(1)

    def extra_repr(self) -> str:
        extra = f", matrix={self.matrix_type}" if self.matrix_type != "full" else ""
        extra += f", dropout={self.dropout}" if self.dropout else ""
        extra += ", mean=scalar" if self.mean_scale is not None else ""
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
            w = F.dropout(w, self.dropout)  # the learned entries only, not the length-normalised average
        if self.causal:
            w = (w + self._prefix_mean(torch.arange(length, device=w.device), w.dtype)).tril()
        out = torch.addmm(self.bias[:length].unsqueeze(1), w, x.reshape(length, -1)).view_as(x)
        if self.mean_scale is not None and not self.causal:
            # Each sentence's own mean (padding was zeroed above): not a matrix term, as n differs per sentence.
            count = x.new_full((x.size(1),), length) if padding_mask is None else (~padding_mask).sum(1).to(x.dtype)
            out = out + self.mean_scale * (x.sum(0) / count.clamp(min=1).unsqueeze(1))
        return out

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
