"""The one exception type that the command-line front ends report without a traceback."""

from fairseq_resmlp_tools._cli import ToolError


class DataPrepError(ToolError):
    """Bad input data or options; the message names the file (and line) at fault."""
