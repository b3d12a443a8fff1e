"""Errors that reach users: each message names the file or setting at fault and what to do about it.

``train.py`` and ``predict.py`` print these without a traceback; anything else is a bug and keeps its traceback.
"""


class CycleGANError(Exception):
    """Base class of the errors users can fix themselves."""


class DataError(CycleGANError):
    """A data folder or image cannot be used (missing, empty, corrupt, unsupported)."""


class CheckpointError(CycleGANError):
    """A checkpoint is missing, truncated, unsafe or of the wrong kind."""


class ConfigError(CycleGANError):
    """A combination of settings that cannot work."""


class NumericalError(CycleGANError):
    """Training produced a NaN or Inf (a loss or the weights); nothing poisoned was applied or saved."""


class OutputError(CycleGANError):
    """An output (prediction, grid, export) cannot be written: disk full, permission denied."""
