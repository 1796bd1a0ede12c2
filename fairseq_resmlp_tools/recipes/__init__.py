"""Training recipes: the small-data recipe (``small``) and the ResMLP paper's WMT14 recipe (``wmt14``).

A recipe is a list of commands (``runner``) that is printed first, resumable and safe to run again; the
fairseq-train flag sets live in ``fairseq_args``, checkpoint repair in ``checkpoints``.
"""
