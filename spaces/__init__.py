"""Genome <-> concrete compressed model."""

from .adapters import AdaptedDrop, AdapterSites, DropAdapters, adapter_sites, fold_adapters
from .binary import BinaryWidthSpace, BiRealNet
from .candidate import Candidate, ModelStats, model_stats
from .checks import check_space, run_model
from .drops import BlockDropSpace, find_blocks
from .masks import ChannelGroup, FilterMaskSpace, find_groups, output_layer
from .space import ComposedSpace, Space

__all__ = ["AdaptedDrop", "AdapterSites", "BiRealNet", "BinaryWidthSpace", "BlockDropSpace", "Candidate",
           "ChannelGroup", "ComposedSpace", "DropAdapters", "FilterMaskSpace", "ModelStats", "Space", "adapter_sites",
           "check_space", "find_blocks", "find_groups", "fold_adapters", "model_stats", "output_layer", "run_model"]
