"""Genome <-> concrete compressed model."""

from .candidate import Candidate, ModelStats, model_stats
from .drops import BlockDropSpace, find_blocks
from .masks import ChannelGroup, FilterMaskSpace, find_groups
from .space import ComposedSpace, Space

__all__ = ["BlockDropSpace", "Candidate", "ChannelGroup", "ComposedSpace", "FilterMaskSpace", "ModelStats",
           "Space", "find_blocks", "find_groups", "model_stats"]
