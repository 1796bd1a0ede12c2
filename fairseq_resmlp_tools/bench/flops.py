"""Model FLOPs per target token (forward + backward, counted by torch's FlopCounterMode) and the measured matmul
peak of the device: the two numbers behind MFU = FLOPs per token x tokens/s / peak.

    python -m fairseq_resmlp_tools.bench.flops --archs resmlp_6,transformer_wmt_en_de --vocab 32000 --fp16
"""

import argparse
import json
import time
from pathlib import Path
from typing import Dict, Optional, Sequence

import torch


def train_flops_per_target_token(
    arch: str, vocab: int, src_len: int, tgt_len: int, batch: int, device: str, fp16: bool
) -> float:
    from fairseq.models import ARCH_CONFIG_REGISTRY
    from torch.utils.flop_counter import FlopCounterMode

    import fairseq_resmlp  # noqa: F401  (registers the resmlp architectures)
    from fairseq_resmlp_tools.bench.decode import Config, build, make_dictionary

    if arch not in ARCH_CONFIG_REGISTRY:
        raise ValueError(f"--archs: {arch} is not a registered fairseq architecture")

    dictionary = make_dictionary(vocab)
    cfg = Config(
        device=device,
        fp16=fp16,
        pairs=[],
        vocab=vocab,
        beams=[],
        batch_sizes=[],
        decode_sentences=0,
        step_lengths=[],
        step_batch=0,
        step_beam=0,
        repeats=0,
        out=Path("."),
    )
    model = build(arch, cfg, dictionary)
    model.train()
    src = torch.randint(dictionary.nspecial, vocab, (batch, src_len), device=device)
    prev = torch.randint(dictionary.nspecial, vocab, (batch, tgt_len), device=device)
    with FlopCounterMode(display=False) as counter:
        out, _ = model(src, torch.full((batch,), src_len, device=device), prev)
        out.float().log_softmax(-1).mean().backward()
    return counter.get_total_flops() / (batch * tgt_len)


def matmul_peak(device: str, fp16: bool, n: int = 8192, reps: int = 10) -> Optional[float]:
    """FLOP/s of a large square matrix product (the denominator of MFU); None on the CPU."""
    if device != "cuda":
        return None
    dtype = torch.float16 if fp16 else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - start)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archs", default="resmlp_6,transformer_wmt_en_de")
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--src-len", type=int, default=30, help="typical source length (newstest, SentencePiece)")
    p.add_argument("--tgt-len", type=int, default=32)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--fp16", action="store_true")
    a = p.parse_args(argv)
    result: Dict[str, object] = {"peak_flops": matmul_peak(a.device, a.fp16)}
    for arch in a.archs.split(","):
        try:
            result[arch] = train_flops_per_target_token(arch, a.vocab, a.src_len, a.tgt_len, a.batch, a.device, a.fp16)
        except ValueError as e:
            p.error(str(e))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
