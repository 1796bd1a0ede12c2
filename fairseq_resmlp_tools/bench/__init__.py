"""Benchmarks: decoding speed and step latency (``decode``), training speed through fairseq-train (``train``),
and the data preparation stages (``data_prep``)."""
