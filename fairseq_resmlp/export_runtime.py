"""Translate with a ResMLP model exported by ``fairseq_resmlp.export``, with torch and json only (no fairseq).

    translator = ExportedTranslator("exported/")
    hypos = translator.translate([translator.encode("a tokenised sentence")], beam=4)
    print(translator.decode(hypos[0][0]["tokens"]), float(hypos[0][0]["score"]))

``translate`` runs beam search with the semantics of fairseq's ``SequenceGenerator`` (the defaults of
``fairseq-generate`` / the hub: candidates are the best 2 x beam continuations, a hypothesis ending in EOS is
finished with its score divided by its length ** lenpen, a sentence is done with ``beam`` finished hypotheses,
finished sentences leave the batch); beam 1 is greedy search. ``encode``/``decode`` map whitespace-separated
symbols (already tokenised/BPE-encoded) to ids and back; apply your BPE model around them.

Nothing here imports fairseq: this file, ``model.json`` and the three ``.pt2`` programs are all a deployer needs.
"""

import json
import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import torch
from torch import Tensor

EXPORT_FORMAT = "fairseq-resmlp-export"  # written by fairseq_resmlp.export (kept here so no import is needed)
Hypothesis = Dict[str, Tensor]  # "tokens" (ending in EOS), "score" (0-dim), "positional_scores"


class _DecodingState:
    """The step's explicit state for the rows (hypotheses) being decoded."""

    def __init__(self, layers: int, rows: int, dim: int, capacity: int, keys: Tensor, values: Tensor, bias: Tensor):
        self.inputs = torch.zeros(layers, rows, capacity, dim)
        self.keys, self.values, self.mask_bias = keys, values, bias

    def ensure_capacity(self, step: int, limit: int) -> None:
        """Double the token-mixing buffers (zeros beyond what is written) when ``step`` does not fit."""
        capacity = self.inputs.size(2)
        if step < capacity:
            return
        grown = self.inputs.new_zeros(*self.inputs.shape[:2], min(limit, 2 * capacity), self.inputs.size(3))
        grown[:, :, :capacity] = self.inputs
        self.inputs = grown

    def select_rows(self, order: Tensor, sentences_changed: bool = True) -> None:
        """Follow the search: row i of the new state is row ``order[i]`` of the current one."""
        self.inputs = self.inputs.index_select(1, order)
        if sentences_changed:
            # Keys/values are equal for every hypothesis of a sentence: only a change of sentences moves them.
            self.keys = self.keys.index_select(1, order)
            self.values = self.values.index_select(1, order)
            self.mask_bias = self.mask_bias.index_select(0, order)


class ExportedTranslator:
    """The exported encoder, decoder initialisation and decoder step, with dictionaries and beam search."""

    def __init__(self, folder: Union[str, Path]) -> None:
        folder = Path(folder)
        meta = folder / "model.json"
        if not meta.is_file():
            raise FileNotFoundError(f"{meta}: not found (export with `python -m fairseq_resmlp.export`)")
        info = json.loads(meta.read_text(encoding="utf-8"))
        if info.get("format") != EXPORT_FORMAT:
            raise ValueError(f"{meta}: not a fairseq-resmlp export (format {info.get('format')!r})")
        self.info = info
        self.encoder = torch.export.load(str(folder / info["files"]["encoder"])).module()
        self.decoder_init = torch.export.load(str(folder / info["files"]["decoder_init"])).module()
        self.decoder_step = torch.export.load(str(folder / info["files"]["decoder_step"])).module()
        self.pad, self.eos, self.unk = info["pad"], info["eos"], info["unk"]
        self.vocab_size = len(info["target_symbols"])
        # A symbol listed twice (a dict.txt line marked #fairseq:overwrite) is its later id, as in fairseq's Dictionary.
        self.source_index: Dict[str, int] = {symbol: i for i, symbol in enumerate(info["source_symbols"])}

    # Symbols ----------------------------------------------------------------------------------------------------

    def encode(self, line: str) -> Tensor:
        """Source ids of a tokenised line (unknown symbols -> unk), with the final EOS."""
        ids = [self.source_index.get(word, self.unk) for word in line.split()]
        return torch.tensor(ids + [self.eos], dtype=torch.long)

    def decode(self, tokens: Union[Tensor, Sequence[int]]) -> str:
        """The target symbols of ``tokens``, without EOS and padding."""
        symbols = self.info["target_symbols"]
        return " ".join(symbols[int(t)] for t in tokens if int(t) not in (self.eos, self.pad))

    # Search -----------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def translate(
        self,
        sources: Sequence[Tensor],
        beam: int = 1,
        max_len_a: float = 0.0,
        max_len_b: int = 200,
        min_len: int = 1,
        lenpen: float = 1.0,
        unkpen: float = 0.0,
    ) -> List[List[Hypothesis]]:
        """Up to ``beam`` hypotheses per source (best first), as fairseq's generator returns them."""
        if beam < 1:
            raise ValueError(f"beam must be >= 1, got {beam}")
        lengths = [len(s) for s in sources]
        longest = max(lengths)
        if longest > self.info["max_source_positions"]:
            raise ValueError(
                f"a source of {longest} tokens exceeds the model's {self.info['max_source_positions']} positions"
            )
        # Left-padded as fairseq batches them (the encoder accepts either).
        src = torch.full((len(sources), longest), self.pad, dtype=torch.long)
        for row, tokens in enumerate(sources):
            src[row, longest - len(tokens) :] = torch.as_tensor(tokens, dtype=torch.long)
        real = (src.ne(self.eos) & src.ne(self.pad)).sum(dim=1)
        max_len = min(int(max_len_a * int(real.max()) + max_len_b), self.info["max_target_positions"] - 1)
        if min_len > max_len:
            raise ValueError(f"min_len {min_len} is larger than max_len {max_len}")
        encoder_out, padding_mask = self.encoder(src)
        keys, values, bias = self.decoder_init(encoder_out, padding_mask)
        state = _DecodingState(
            self.info["decoder_layers"],
            len(sources),
            self.info["decoder_embed_dim"],
            min(16, self.info["max_target_positions"]),
            keys,
            values,
            bias,
        )
        return self._beam_search(state, len(sources), beam, max_len, min_len, lenpen, unkpen)

    def _log_probs(self, tokens: Tensor, step: int, state: _DecodingState) -> Tensor:
        state.ensure_capacity(step, self.info["max_target_positions"])
        step_t = torch.tensor([step], dtype=torch.long)
        log_probs, state.inputs = self.decoder_step(
            tokens, step_t, state.inputs, state.keys, state.values, state.mask_bias
        )
        return log_probs

    def _constrain(self, lprobs: Tensor, step: int, max_len: int, min_len: int, unkpen: float) -> Tensor:
        lprobs[lprobs != lprobs] = -math.inf
        lprobs[:, self.pad] = -math.inf
        lprobs[:, self.unk] -= unkpen
        if step >= max_len:  # the last step can only end the hypothesis
            lprobs[:, : self.eos] = -math.inf
            lprobs[:, self.eos + 1 :] = -math.inf
        if step < min_len:
            lprobs[:, self.eos] = -math.inf
        return lprobs

    def _beam_search(
        self, state: _DecodingState, bsz: int, beam: int, max_len: int, min_len: int, lenpen: float, unkpen: float
    ) -> List[List[Hypothesis]]:
        vocab = self.vocab_size
        state.select_rows(torch.arange(bsz).repeat_interleave(beam))
        scores = torch.zeros(bsz * beam, max_len + 1)  # cumulative score of each hypothesis after each step
        tokens = torch.full((bsz * beam, max_len + 2), self.pad, dtype=torch.long)
        tokens[:, 0] = self.eos
        ignored = torch.zeros(bsz, beam, dtype=torch.bool)  # beams left empty when fewer than beam candidates live
        finalized: List[List[Hypothesis]] = [[] for _ in range(bsz)]
        finished = [False] * bsz
        remaining = bsz
        cand_size = 2 * beam  # twice the beam, in case half of the candidates end in EOS
        cand_offsets = torch.arange(cand_size)
        reorder: Optional[Tensor] = None
        batch_idxs: Optional[Tensor] = None
        for step in range(max_len + 1):  # one more step than max_len for the final EOS
            if reorder is not None:
                if batch_idxs is not None:
                    # Rows were numbered in the shrunk batch: map them back to the state's rows.
                    shift = batch_idxs - torch.arange(batch_idxs.numel())
                    reorder.view(-1, beam).add_(shift.unsqueeze(-1) * beam)
                state.select_rows(reorder, sentences_changed=batch_idxs is not None)
            lprobs = self._log_probs(tokens[:, step], step, state)
            lprobs = self._constrain(lprobs, step, max_len, min_len, unkpen).view(bsz, beam, vocab)
            if step == 0:
                lprobs = lprobs[:, ::beam, :].contiguous()  # every beam holds the same prefix: use the first
            else:
                lprobs = lprobs + scores.view(bsz, beam, -1)[:, :, step - 1].unsqueeze(-1)
            flat = lprobs.view(bsz, -1)
            cand_scores, cand_flat = torch.topk(flat, k=min(cand_size, flat.size(1) - 1))
            cand_beams = torch.div(cand_flat, vocab, rounding_mode="trunc")
            cand_indices = cand_flat.fmod(vocab)
            cand_rows = cand_beams + (torch.arange(bsz) * beam).unsqueeze(1)

            eos_mask = cand_indices.eq(self.eos) & cand_scores.ne(-math.inf)
            eos_mask[:, :beam][ignored] = False
            eos_rows = torch.masked_select(cand_rows[:, :beam], mask=eos_mask[:, :beam])
            done: List[int] = []
            if eos_rows.numel() > 0:
                eos_scores = torch.masked_select(cand_scores[:, :beam], mask=eos_mask[:, :beam])
                done = self._finalize(
                    step, eos_rows, eos_scores, tokens, scores, finalized, finished, beam, max_len, lenpen
                )
                remaining -= len(done)
            if remaining == 0 or step >= max_len:
                break

            if done:
                keep = torch.ones(bsz, dtype=torch.bool)
                keep[done] = False
                batch_idxs = torch.arange(bsz).masked_select(keep)
                new_bsz = bsz - len(done)
                eos_mask, cand_beams = eos_mask[batch_idxs], cand_beams[batch_idxs]
                cand_rows = cand_beams + (torch.arange(new_bsz) * beam).unsqueeze(1)
                cand_scores, cand_indices = cand_scores[batch_idxs], cand_indices[batch_idxs]
                ignored = ignored[batch_idxs]
                scores = scores.view(bsz, -1)[batch_idxs].view(new_bsz * beam, -1)
                tokens = tokens.view(bsz, -1)[batch_idxs].view(new_bsz * beam, -1)
                bsz = new_bsz
            else:
                batch_idxs = None

            # Keep the best `beam` candidates that do not end in EOS (ignored ones sort last).
            eos_mask[:, :beam] = ~((~ignored) & (~eos_mask[:, :beam]))
            active_mask = eos_mask.long() * cand_size + cand_offsets[: eos_mask.size(1)]
            new_ignored, active = torch.topk(active_mask, k=beam, dim=1, largest=False)
            ignored = new_ignored.ge(cand_size)[:, :beam]
            active_rows = torch.gather(cand_rows, dim=1, index=active).view(-1)
            tokens[:, : step + 1] = torch.index_select(tokens[:, : step + 1], dim=0, index=active_rows)
            tokens.view(bsz, beam, -1)[:, :, step + 1] = torch.gather(cand_indices, dim=1, index=active)
            if step > 0:
                scores[:, :step] = torch.index_select(scores[:, :step], dim=0, index=active_rows)
            scores.view(bsz, beam, -1)[:, :, step] = torch.gather(cand_scores, dim=1, index=active)
            reorder = active_rows

        results: List[List[Hypothesis]] = []
        for hypos in finalized:
            _, order = torch.sort(torch.tensor([float(h["score"]) for h in hypos]), descending=True)
            results.append([hypos[int(i)] for i in order])
        return results

    def _finalize(
        self,
        step: int,
        rows: Tensor,
        eos_scores: Tensor,
        tokens: Tensor,
        scores: Tensor,
        finalized: List[List[Hypothesis]],
        finished: List[bool],
        beam: int,
        max_len: int,
        lenpen: float,
    ) -> List[int]:
        """Store the hypotheses of ``rows`` ending in EOS now; returns the batch indices of sentences now done."""
        hypo_tokens = tokens.index_select(0, rows)[:, 1 : step + 2]
        hypo_tokens[:, step] = self.eos
        positional = scores.index_select(0, rows)[:, : step + 1]
        positional[:, step] = eos_scores
        positional[:, 1:] = positional[:, 1:] - positional[:, :-1]  # cumulative -> per token
        normalised = eos_scores / (step + 1) ** lenpen
        # Batch index -> sentence index: the batch holds the unfinished sentences, in order.
        unfinished = [i for i, f in enumerate(finished) if not f]
        batch_index = torch.div(rows, beam, rounding_mode="trunc").tolist()
        sentences = [unfinished[b] for b in batch_index]
        for i, sentence in enumerate(sentences):
            if len(finalized[sentence]) < beam:
                finalized[sentence].append(
                    {"tokens": hypo_tokens[i], "score": normalised[i], "positional_scores": positional[i]}
                )
        done: List[int] = []
        for sentence, b in sorted(set(zip(sentences, batch_index))):
            if not finished[sentence] and (len(finalized[sentence]) == beam or step == max_len):
                finished[sentence] = True
                done.append(b)
        return done


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Translate tokenised lines from stdin: ``python export_runtime.py EXPORT_DIR [--beam 4]``."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(description="Translate stdin with a fairseq-resmlp export (no fairseq needed).")
    parser.add_argument("export_dir", help="the folder written by `python -m fairseq_resmlp.export`")
    parser.add_argument("--beam", type=int, default=4, help="beam size (1: greedy)")
    parser.add_argument("--lenpen", type=float, default=1.0, help="length penalty, as fairseq's --lenpen")
    parser.add_argument("--batch-size", type=int, default=32, help="sentences translated together")
    args = parser.parse_args(argv)
    try:
        translator = ExportedTranslator(args.export_dir)
    except (FileNotFoundError, ValueError) as e:
        parser.error(str(e))
    lines = [line.rstrip("\n") for line in sys.stdin]
    for start in range(0, len(lines), args.batch_size):
        batch = lines[start : start + args.batch_size]
        hypos = translator.translate([translator.encode(x) for x in batch], beam=args.beam, lenpen=args.lenpen)
        for i, best in enumerate(h[0] for h in hypos):
            print(f"H-{start + i}\t{float(best['score']):.6f}\t{translator.decode(best['tokens'])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
