"""oneapi: one OpenAI-compatible endpoint in front of every LLM vendor."""

from .documents import ConfigError, Problem
from .snapshot import Snapshot, build_snapshot

__all__ = ["ConfigError", "Problem", "Snapshot", "build_snapshot"]
__version__ = "0.1.0"
