"""Fixed-shape decoding steps for the ResMLP decoder, replayed as CUDA graphs on a GPU.

ResMLP's decoding state has fixed shapes: per layer, the last ``max_target_positions`` normalised token-mixing
inputs, and cross-attention keys/values that do not change during a generation. So every step can run the same
kernels on the same buffers: the token is written at position t of preallocated buffers, row t of each mixing
matrix is applied with the future masked (shapes depend on a length bucket, not on t), and the whole step
(embedding, layers, final norm, output projection) is captured once as a CUDA graph and replayed, instead of
~100 kernel launches from Python per step.

Shapes are bucketed so that a few graphs serve a whole run: rows (hypotheses) to ``group * 2^k``, the prefix
length to powers of two (>= 16), the source length to powers of two (>= 16). When fairseq's generator removes
finished sentences, the surviving rows are copied to the front of the same buffers and a smaller bucket's graph
runs. Rows past the live ones hold finite leftovers and their outputs are dropped.

The buffers belong to the decoder and are reused by every generation; a generation claims them at its first step.
Two generations interleaved on one model cannot share them, which is an error (turn graphs off for that).
"""

import math
import weakref
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor

IncrementalState = Dict[str, Dict[str, Optional[Tensor]]]


def _pow2_at_least(n: int, floor: int = 1) -> int:
    return max(floor, 2 ** math.ceil(math.log2(max(n, 1))))


class _Buffers:
    """The decoder-owned buffers one generation at a time decodes into."""

    def __init__(self, decoder, rows: int, sentences: int, src_len: int, device, dtype) -> None:
        layers = decoder.layers
        attn = layers[0].encoder_attn
        dim = decoder.embed_tokens.embedding_dim
        positions = decoder.max_target_positions
        self.rows, self.sentences, self.src_len = rows, sentences, src_len
        self.device, self.dtype = device, dtype
        self.tokens = torch.full((rows,), decoder.padding_idx, dtype=torch.long, device=device)
        self.step = torch.zeros(1, dtype=torch.long, device=device)
        self.mix = [torch.zeros(rows, positions, dim, device=device, dtype=dtype) for _ in layers]
        shape = (sentences, attn.heads, src_len, attn.head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in layers]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in layers]
        self.mask_bias = torch.zeros(sentences, 1, 1, src_len, device=device, dtype=dtype)
        self.positions: Optional[Tensor] = None
        if decoder.embed_positions is not None:
            # Row t = the embedding fairseq's positional module gives step t (positions count from padding_idx+1).
            probe = torch.full((1, positions), decoder.padding_idx + 1, dtype=torch.long, device=device)
            self.positions = decoder.embed_positions(probe)[0].to(dtype)
        self.graphs: Dict[Tuple[int, int, int, int], Tuple[torch.cuda.CUDAGraph, Tensor, Tensor]] = {}
        self.seen: Dict[Tuple[int, int, int, int], int] = {}
        # The graphs of these buffers share one memory pool; it lives and dies with them.
        self.pool = torch.cuda.graph_pool_handle() if device.type == "cuda" else None
        self.owner = 0

    def fits(self, rows: int, sentences: int, src_len: int, device, dtype) -> bool:
        return (
            rows <= self.rows
            and sentences <= self.sentences
            and src_len <= self.src_len
            and device == self.device
            and dtype == self.dtype
        )


class StaticDecoding:
    """Fixed-shape, graph-replayed decoding steps for one ``ResMLPDecoder`` (see the module docstring).

    ``mode``: "auto" (the default: on for CUDA tensors when enabled), "eager" (the same fixed-shape steps without
    graphs, on any device: for tests and for profiling) or "off".
    """

    def __init__(self, decoder, enabled: bool = True) -> None:
        self._decoder = weakref.ref(decoder)  # no reference cycle through the module tree
        self.mode = "auto" if enabled else "off"
        self._buffers: Optional[_Buffers] = None
        self._generations = 0
        self.captures = 0  # graphs captured so far (for benchmarks and tests)
        self.steps = 0  # fixed-shape steps run so far (for benchmarks and tests)

    @property
    def decoder(self):
        decoder = self._decoder()
        assert decoder is not None
        return decoder

    def applies(self, prev_output_tokens: Tensor, encoder_out: Optional[Dict[str, List[Tensor]]]) -> bool:
        """Whether the fixed-shape path serves this incremental step."""
        if self.mode == "off" or self.decoder.training or torch.is_grad_enabled():
            return False
        if encoder_out is None or len(encoder_out["encoder_out"]) == 0:
            return False
        if self.mode == "auto" and not (prev_output_tokens.is_cuda and torch.cuda.is_available()):
            return False
        return True

    # One step ----------------------------------------------------------------------------------------------

    def step(
        self, prev_output_tokens: Tensor, encoder_out: Dict[str, List[Tensor]], incremental_state: IncrementalState
    ) -> Tuple[Tensor, Dict[str, List[Optional[Tensor]]]]:
        decoder = self.decoder
        state = decoder.get_incremental_state(incremental_state, "static")
        if state is None:
            state = self._start(prev_output_tokens, encoder_out)
        buffers = self._buffers
        assert buffers is not None
        owner, steps_t, rows_t, group_t, src_t = (state[k] for k in ("owner", "steps", "rows", "group", "src_len"))
        assert owner is not None and steps_t is not None and rows_t is not None
        assert group_t is not None and src_t is not None
        if int(owner) != buffers.owner:
            raise RuntimeError(
                "two generations are interleaved on one ResMLP decoder, which share its fixed-shape decoding "
                "buffers: generate one at a time, or turn CUDA-graph decoding off (--no-cuda-graphs, e.g. "
                "fairseq-generate --model-overrides \"{'no_cuda_graphs': True}\")"
            )
        step, rows, group, src_len = int(steps_t), int(rows_t), int(group_t), int(src_t)
        if step >= decoder.max_target_positions:
            raise ValueError(
                f"decoding step {step} is beyond the token-mixing matrix ({decoder.max_target_positions} positions)"
            )
        if prev_output_tokens.size(0) != rows:
            raise RuntimeError(f"decoder state holds {rows} hypotheses but the step has {prev_output_tokens.size(0)}")
        bucket_rows = group * _pow2_at_least(rows // group)
        length = min(decoder.max_target_positions, _pow2_at_least(step + 1, 16))
        bucket_src = min(buffers.src_len, _pow2_at_least(src_len, 16))
        buffers.tokens[:rows].copy_(prev_output_tokens[:, -1])
        buffers.step.fill_(step)
        logits, attn = self._run(buffers, bucket_rows, length, bucket_src, group)
        self.steps += 1
        state["steps"] = torch.tensor(step + 1, dtype=torch.long)
        decoder.set_incremental_state(incremental_state, "static", state)
        # Copies: fairseq scales the scores in place, and the graph's outputs are overwritten by the next step.
        out = logits[:rows].unsqueeze(1).clone()
        attn_out = attn[:rows, :src_len].unsqueeze(1).clone()
        return out, {"attn": [attn_out], "inner_states": []}

    def _start(self, prev_output_tokens: Tensor, encoder_out: Dict[str, List[Tensor]]) -> Dict[str, Optional[Tensor]]:
        """First step of a generation: claim the buffers and fill the per-sentence keys, values and masks."""
        decoder = self.decoder
        enc = encoder_out["encoder_out"][0]  # S x B x C
        mask = encoder_out["encoder_padding_mask"][0] if len(encoder_out["encoder_padding_mask"]) > 0 else None
        group = int(encoder_out["beam_group"][0]) if len(encoder_out.get("beam_group", [])) > 0 else 1
        rows, src_len = prev_output_tokens.size(0), enc.size(0)
        if rows % group != 0 or enc.size(1) != rows:
            group = 1
        sentences = rows // group
        dtype = decoder.embed_tokens.weight.dtype
        need_rows = group * _pow2_at_least(sentences)
        need_src = _pow2_at_least(src_len, 16)
        buffers = self._buffers
        if buffers is None or not buffers.fits(need_rows, need_rows // group, need_src, enc.device, dtype):
            if buffers is not None:
                need_rows = max(need_rows, buffers.rows if buffers.rows % group == 0 else 0)
                need_src = max(need_src, buffers.src_len)
            buffers = _Buffers(decoder, need_rows, need_rows // group, need_src, enc.device, dtype)
            self._buffers = buffers
        self._generations += 1
        buffers.owner = self._generations
        used_rows = group * _pow2_at_least(sentences)
        used_sentences = used_rows // group
        bucket_src = _pow2_at_least(src_len, 16)
        sentence_enc = enc[:, 0::group] if group > 1 else enc
        for layer, k_buf, v_buf, mix in zip(decoder.layers, buffers.k, buffers.v, buffers.mix):
            mix[:used_rows].zero_()
            k, v = layer.encoder_attn.keys_values(sentence_enc)
            k_buf[:used_sentences, :, :bucket_src].zero_()
            v_buf[:used_sentences, :, :bucket_src].zero_()
            k_buf[:sentences, :, :src_len].copy_(k)
            v_buf[:sentences, :, :src_len].copy_(v)
        bias = buffers.mask_bias
        bias[:used_sentences].zero_()  # rows past the live sentences attend everywhere: finite leftovers
        bias[:sentences, :, :, src_len:].fill_(float("-inf"))
        if mask is not None:
            sentence_mask = mask[0::group] if group > 1 else mask
            bias[:sentences, 0, 0, :src_len].masked_fill_(sentence_mask, float("-inf"))
        return {
            "owner": torch.tensor(buffers.owner, dtype=torch.long),
            "steps": torch.tensor(0, dtype=torch.long),
            "rows": torch.tensor(rows, dtype=torch.long),
            "group": torch.tensor(group, dtype=torch.long),
            "src_len": torch.tensor(src_len, dtype=torch.long),
        }

    def _compute(self, buffers: _Buffers, rows: int, length: int, src_len: int, group: int) -> Tuple[Tensor, Tensor]:
        """The step itself, on fixed buffers: every shape depends only on the buckets."""
        decoder = self.decoder
        sentences = rows // group
        x = decoder.embed_scale * decoder.embed_tokens(buffers.tokens[:rows])
        if buffers.positions is not None:
            x = x + buffers.positions.index_select(0, buffers.step)
        attn: Optional[Tensor] = None
        for layer, mix, k, v in zip(decoder.layers, buffers.mix, buffers.k, buffers.v):
            x, attn = layer.step(
                x,
                mix[:rows],
                buffers.step,
                length,
                k[:sentences, :, :src_len],
                v[:sentences, :, :src_len],
                buffers.mask_bias[:sentences, :, :, :src_len],
            )
        assert attn is not None
        return decoder.output_layer(decoder.layer_norm(x)), attn

    def _run(self, buffers: _Buffers, rows: int, length: int, src_len: int, group: int) -> Tuple[Tensor, Tensor]:
        key = (rows, length, src_len, group)
        if self.mode == "eager" or buffers.device.type != "cuda":
            return self._compute(buffers, rows, length, src_len, group)
        found = buffers.graphs.get(key)
        if found is not None:
            graph, logits, attn = found
            graph.replay()
            return logits, attn
        # Capture a bucket on its second use: one-off shapes (a batch's last few steps) are not worth a graph.
        buffers.seen[key] = buffers.seen.get(key, 0) + 1
        if buffers.seen[key] < 2:
            return self._compute(buffers, rows, length, src_len, group)
        # Replaying the warm-up writes the same step again: idempotent (position t gets the same input).
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self._compute(buffers, rows, length, src_len, group)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=buffers.pool):
            logits, attn = self._compute(buffers, rows, length, src_len, group)
        buffers.graphs[key] = (graph, logits, attn)
        self.captures += 1
        graph.replay()
        return logits, attn

    # Beam search -------------------------------------------------------------------------------------------

    def reorder(self, incremental_state: IncrementalState, new_order: Tensor) -> None:
        """Follow the generator: copy the surviving hypotheses' buffers to the front, in the new order."""
        decoder = self.decoder
        state = decoder.get_incremental_state(incremental_state, "static")
        if state is None:
            return
        buffers = self._buffers
        assert buffers is not None
        steps_t, rows_t, group_t = state["steps"], state["rows"], state["group"]
        assert steps_t is not None and rows_t is not None and group_t is not None
        step, rows, group = int(steps_t), int(rows_t), int(group_t)
        new_rows = new_order.numel()
        for mix in buffers.mix:
            mix[:new_rows, :step] = mix[:rows, :step].index_select(0, new_order)
        if group > 1:
            if new_rows % group != 0:
                raise RuntimeError(
                    f"beam search reordered {new_rows} hypotheses, not whole groups of {group}: "
                    "the per-sentence key/value buffers cannot follow"
                )
            sentence_order = new_order.view(-1, group) // group
            torch._assert_async(sentence_order.eq(sentence_order[:, :1]).all())  # checked on the device
            sentence_order = sentence_order[:, 0]
        else:
            sentence_order = new_order
        if new_rows != rows:
            sentences, new_sentences = rows // group, new_rows // group
            for k, v in zip(buffers.k, buffers.v):
                k[:new_sentences] = k[:sentences].index_select(0, sentence_order)
                v[:new_sentences] = v[:sentences].index_select(0, sentence_order)
            buffers.mask_bias[:new_sentences] = buffers.mask_bias[:sentences].index_select(0, sentence_order)
        elif group == 1:
            for k, v in zip(buffers.k, buffers.v):
                k[:rows] = k[:rows].index_select(0, new_order)
                v[:rows] = v[:rows].index_select(0, new_order)
            buffers.mask_bias[:rows] = buffers.mask_bias[:rows].index_select(0, new_order)
        else:
            torch._assert_async(sentence_order.eq(torch.arange(rows // group, device=new_order.device)).all())
        state["rows"] = torch.tensor(new_rows, dtype=torch.long)
        decoder.set_incremental_state(incremental_state, "static", state)
