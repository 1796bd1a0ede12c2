"""``fairseq-train`` with PyTorch's cuDNN attention backend switched off for the whole process.

    python -m fairseq_resmlp_tools.bench.train_no_cudnn_attention DATA_BIN --arch transformer_wmt_en_de ...

The plugin's cross-attention avoids cuDNN attention itself (fairseq_resmlp/modules/cross_attention.py); fairseq's
own MultiheadAttention does not, and on H100/H200 PyTorch prefers cuDNN attention, which plans every new batch shape
on the host. resmlp-benchmark-train --no-cudnn-attention uses this entry point so that both models are timed with
the same attention backends.
"""

import sys


def main() -> None:
    import torch

    torch.backends.cuda.enable_cudnn_sdp(False)
    from fairseq_cli.train import cli_main

    sys.argv = ["fairseq-train", *sys.argv[1:]]
    cli_main()


if __name__ == "__main__":
    main()
