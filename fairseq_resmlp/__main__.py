"""``python -m fairseq_resmlp`` prints the folder to give fairseq as ``--user-dir`` (for a pip-installed copy)."""

import os

if __name__ == "__main__":
    print(os.path.dirname(os.path.abspath(__file__)))
