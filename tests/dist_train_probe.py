"""fairseq-train, started once per rank by torchrun, that also dumps each rank's parameters when it saves.

Used by test_distributed.py to check that data-parallel ranks stay identical. fairseq saves checkpoints on
rank 0 only; wrapping save_checkpoint (called on every rank) is the least intrusive place to look at all ranks.
"""

import os
import sys

import torch
from fairseq import checkpoint_utils
from fairseq_cli import train

_save = checkpoint_utils.save_checkpoint


def _save_and_dump(cfg, trainer, epoch_itr, val_loss):
    rank = trainer.data_parallel_rank
    params = {k: v.detach().cpu().clone() for k, v in trainer.get_model().state_dict().items()}
    torch.save(
        {"num_updates": trainer.get_num_updates(), "params": params},
        os.path.join(os.environ["PROBE_DIR"], f"rank{rank}.pt"),
    )
    return _save(cfg, trainer, epoch_itr, val_loss)


checkpoint_utils.save_checkpoint = _save_and_dump

if __name__ == "__main__":
    sys.argv[0] = "fairseq-train"
    train.cli_main()
