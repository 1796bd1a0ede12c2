"""``resmlp-user-dir``: print the folder to give fairseq as ``--user-dir`` (as ``python -m fairseq_resmlp``)."""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from fairseq_resmlp_tools._cli import run_cli
from fairseq_resmlp_tools.fairseq_io import user_dir


def _main(argv: Optional[Sequence[str]] = None) -> int:
    argparse.ArgumentParser(prog="resmlp-user-dir", description=__doc__.split(":", 1)[1].strip()).parse_args(argv)
    print(user_dir())
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Console-script entry point."""
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
