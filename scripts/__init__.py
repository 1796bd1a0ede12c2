"""Command-line tools of fairseq-resmlp: evaluation, checkpoint averaging, training recipes, plots.

Each is runnable as ``python scripts/NAME.py`` or ``python -m scripts.NAME`` from the repository root.
"""
