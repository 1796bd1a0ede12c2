"""The one exception type that the command-line front ends report without a traceback."""


class DataPrepError(Exception):
    """Bad input data or options; the message names the file (and line) at fault."""
