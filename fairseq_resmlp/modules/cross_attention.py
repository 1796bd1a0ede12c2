"""Encoder-decoder attention: the one attention ResMLP keeps.

A lean multi-head attention written for this one use, instead of fairseq's general MultiheadAttention: it runs
PyTorch's fused scaled-dot-product attention (flash / memory-efficient kernels on GPU) in training and
full decoding, where fairseq's module falls back to explicit matrix products and softmax for encoder-decoder
attention, and its decoding step is a handful of kernels. Parameter names (q_proj, k_proj, v_proj, out_proj)
and initialisation are fairseq's, so checkpoints are interchangeable.

In beam search every hypothesis of a sentence attends to the same encoder output. The encoder records how its
output was expanded for the search (``group`` hypotheses per sentence, see ``ResMLPEncoder.reorder_encoder_out``),
and the decoder passes that on: keys and values are then kept once per sentence, not once per hypothesis (1/group
of the cache, and no copying when hypotheses are reordered within their sentences, only when finished sentences
leave the batch).
"""

import contextlib
import math
from typing import ContextManager, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from fairseq.incremental_decoding_utils import with_incremental_state
from torch import Tensor, nn

from .affine import norm_then_linear

IncrementalState = Dict[str, Dict[str, Optional[Tensor]]]

try:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    # Every backend but cuDNN's. On H100/H200 PyTorch prefers cuDNN attention, which builds an execution graph for
    # every new (batch, target length, source length): fairseq's batches rarely repeat a shape, so each call paid the
    # build on the host, 7 ms per forward call and more per backward (docs/training_speed.md). The memory-efficient
    # kernel (masks) and flash (no mask) need no per-shape set-up.
    _BACKENDS = [b for b in SDPBackend.__members__.values() if b not in (SDPBackend.CUDNN_ATTENTION, SDPBackend.ERROR)]

    def sdpa_backends() -> ContextManager:
        return sdpa_kernel(_BACKENDS)

except (ImportError, AttributeError):  # torch < 2.3 has no cuDNN attention (nor sdpa_kernel) to avoid

    def sdpa_backends() -> ContextManager:
        return contextlib.nullcontext()


def softmax_at_least_float32(scores: Tensor) -> Tensor:
    """Softmax over the last axis in float32 for half precision (as fairseq does), in the input's dtype otherwise:
    ``.float()`` would round float64 scores down to float32."""
    return torch.softmax(scores, dim=-1, dtype=torch.promote_types(scores.dtype, torch.float32))


@with_incremental_state
class CrossAttention(nn.Module):
    """Multi-head attention from decoder positions to the encoder output, keys/values cached when decoding."""

    def __init__(self, dim: int, kdim: int, heads: int, dropout: float) -> None:
        super().__init__()
        if dim % heads != 0:
            raise ValueError(f"--decoder-embed-dim {dim} must be divisible by --decoder-attention-heads {heads}")
        self.heads = heads
        self.head_dim = dim // heads
        self.dropout = dropout
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(kdim, dim)
        self.v_proj = nn.Linear(kdim, dim)
        self.out_proj = nn.Linear(dim, dim)
        for proj in (self.q_proj, self.k_proj, self.v_proj):
            nn.init.xavier_uniform_(proj.weight, gain=1 / math.sqrt(2))
        nn.init.xavier_uniform_(self.out_proj.weight)
        nn.init.constant_(self.out_proj.bias, 0.0)

    def _split_heads(self, x: Tensor) -> Tensor:
        """L x B x C -> B x H x L x head_dim."""
        length, bsz, _ = x.shape
        return x.view(length, bsz, self.heads, self.head_dim).permute(1, 2, 0, 3)

    def keys_values(self, encoder_out: Tensor) -> Tuple[Tensor, Tensor]:
        """Keys and values (N x H x S x head_dim) of an encoder output (S x N x C_enc)."""
        return self._split_heads(self.k_proj(encoder_out)), self._split_heads(self.v_proj(encoder_out))

    def _cached_keys_values(
        self, encoder_out: Tensor, group: int, incremental_state: Optional[IncrementalState]
    ) -> Tuple[Tensor, Tensor]:
        if incremental_state is None:
            return self.keys_values(encoder_out)
        cached = self.get_incremental_state(incremental_state, "kv")
        if cached is not None and cached.get("k") is not None:
            k, v = cached["k"], cached["v"]
            assert k is not None and v is not None
            return k, v
        if group > 1:
            encoder_out = encoder_out[:, 0::group]  # the group hypotheses of a sentence share one encoder output
        k, v = self.keys_values(encoder_out)
        # The group size lives on the CPU: reading it never waits for the device.
        self.set_incremental_state(
            incremental_state, "kv", {"k": k, "v": v, "group": torch.tensor(group, dtype=torch.long)}
        )
        return k, v

    def forward(
        self,
        query: Tensor,
        encoder_out: Tensor,
        key_padding_mask: Optional[Tensor],
        incremental_state: Optional[IncrementalState] = None,
        need_weights: bool = False,
        group: int = 1,
        norm: Optional[nn.Module] = None,
    ) -> Tuple[Tensor, Optional[Tensor]]:
        """Attend from ``query`` (T x B x C) to ``encoder_out`` (S x B x C_enc).

        ``norm`` is the sublayer's pre-normalisation, applied to the query (and folded into ``q_proj`` where
        that is cheaper). ``group`` > 1 says that the batch holds ``group`` consecutive hypotheses per sentence
        with equal encoder outputs (beam search), so keys and values are cached per sentence. Returns the output
        (T x B x C) and, if ``need_weights``, the attention weights averaged over heads (B x T x S), which
        fairseq uses for alignments.
        """
        q = self.q_proj(query) if norm is None else norm_then_linear(norm, self.q_proj, query)
        tgt_len, bsz, dim = q.shape
        q = self._split_heads(q)
        k, v = self._cached_keys_values(encoder_out, group, incremental_state)
        group = bsz // k.size(0)
        if group > 1:
            # Keys/values per sentence: the group hypotheses of a sentence become group x T queries of it.
            q = q.view(k.size(0), group, self.heads, tgt_len, self.head_dim).transpose(1, 2)
            q = q.reshape(k.size(0), self.heads, group * tgt_len, self.head_dim)
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask[0::group]
        # Boolean mask, True where a key may be attended (PyTorch's convention).
        mask = None if key_padding_mask is None else (~key_padding_mask.bool()).view(k.size(0), 1, 1, -1)
        dropout = self.dropout if self.training else 0.0
        weights: Optional[Tensor] = None
        if need_weights:
            scores = torch.matmul(q * self.head_dim**-0.5, k.transpose(-1, -2))
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            probs = softmax_at_least_float32(scores).type_as(q)
            out = torch.matmul(F.dropout(probs, dropout, self.training), v)
            weights = probs.mean(dim=1).reshape(bsz, tgt_len, -1)
        else:
            with sdpa_backends():
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        if group > 1:
            out = out.view(k.size(0), self.heads, group, tgt_len, self.head_dim).transpose(1, 2)
            out = out.reshape(bsz, self.heads, tgt_len, self.head_dim)
        out = out.permute(2, 0, 1, 3).reshape(tgt_len, bsz, dim)
        return self.out_proj(out), weights

    def step(self, query: Tensor, k: Tensor, v: Tensor, mask_bias: Tensor, norm: nn.Module) -> Tuple[Tensor, Tensor]:
        """One fixed-shape decoding step for ``query`` (B x C): keys/values per sentence (N x H x S x head_dim),
        ``mask_bias`` (N x 1 x 1 x S: 0 where a key may be attended, -inf elsewhere), B a multiple of N.

        Returns the output (B x C) and the attention weights averaged over heads (B x S).
        """
        bsz, dim = query.shape
        sentences, group = k.size(0), bsz // k.size(0)
        q = self.q_proj(norm(query)).view(sentences, group, self.heads, self.head_dim).transpose(1, 2)
        scores = torch.matmul(q * self.head_dim**-0.5, k.transpose(-1, -2)) + mask_bias  # N x H x group x S
        probs = softmax_at_least_float32(scores).type_as(q)
        out = torch.matmul(probs, v).transpose(1, 2).reshape(bsz, dim)
        weights = probs.mean(dim=1).reshape(bsz, -1)
        return self.out_proj(out), weights

    @torch.jit.export
    def reorder_incremental_state(self, incremental_state: IncrementalState, new_order: Tensor) -> None:
        """Follow beam search (batch axis 0 of the cached keys and values)."""
        cached = self.get_incremental_state(incremental_state, "kv")
        if cached is None or cached.get("k") is None:
            return
        k, v, group_t = cached["k"], cached["v"], cached["group"]
        assert k is not None and v is not None and group_t is not None
        group = int(group_t)
        if group > 1:
            if new_order.numel() % group != 0:
                raise RuntimeError(
                    f"beam search reordered {new_order.numel()} hypotheses, not whole groups of {group}: "
                    "the per-sentence key/value cache cannot follow"
                )
            sentence_order = new_order.view(-1, group) // group
            # Every hypothesis must stay within its sentence. Checked on the device: nothing waits for it.
            torch._assert_async(sentence_order.eq(sentence_order[:, :1]).all())
            if k.size(0) * group == new_order.size(0):
                torch._assert_async(sentence_order[:, 0].eq(torch.arange(k.size(0), device=k.device)).all())
                return  # hypotheses reordered within their sentences: the per-sentence cache is unchanged
            new_order = sentence_order[:, 0]  # finished sentences left: keep the others
        self.set_incremental_state(
            incremental_state,
            "kv",
            {"k": k.index_select(0, new_order), "v": v.index_select(0, new_order), "group": group_t},
        )
