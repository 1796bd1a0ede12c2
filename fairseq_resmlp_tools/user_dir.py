"""``resmlp-user-dir``: print the folder to give fairseq as ``--user-dir`` (as ``python -m fairseq_resmlp``)."""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from fairseq_resmlp_tools._cli import console_script
from fairseq_resmlp_tools.fairseq_io import user_dir


@console_script
def main(argv: Optional[Sequence[str]] = None) -> int:
    argparse.ArgumentParser(prog="resmlp-user-dir", description=__doc__.split(":", 1)[1].strip()).parse_args(argv)
    print(user_dir())
    return 0


if __name__ == "__main__":
    sys.exit(main())
