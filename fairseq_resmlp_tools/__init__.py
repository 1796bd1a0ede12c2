"""Command-line tools of fairseq-resmlp: evaluation, checkpoint averaging, training recipes, plots, benchmarks.

A sibling of the plugin, not part of it: importing ``fairseq_resmlp`` imports fairseq (seconds), so the tools
import it only where they need the model. Each tool is a console script (``resmlp-evaluate`` ...) and a module
(``python -m fairseq_resmlp_tools.evaluate``); see README.md.
"""
