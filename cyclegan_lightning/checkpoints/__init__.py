"""Checkpoint files: the format rule, safe loading, atomic writing, per-rank and run state, and loading generators
(ours or the reference's) for inference."""

from .atomic import AtomicCheckpointIO, atomic_open, atomic_torch_save
from .format import CHECKPOINT_FORMAT, check_compatible, check_format
from .generators import LoadedGenerators, load_generators
from .loading import safe_load
from .run_state import RunState

__all__ = [
    "CHECKPOINT_FORMAT",
    "AtomicCheckpointIO",
    "LoadedGenerators",
    "RunState",
    "atomic_open",
    "atomic_torch_save",
    "check_compatible",
    "check_format",
    "load_generators",
    "safe_load",
]
