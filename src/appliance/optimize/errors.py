"""The one error type of ``trt-optimize``: its message names the file (and line, for text files)."""

from __future__ import annotations


class OptimizeError(Exception):
    """Something the user can fix; the CLI prints the message alone, never a stack trace."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class TensorRTMissing(OptimizeError):
    """TensorRT (or pycuda) is not installed here: building and running engines needs a device with both."""
