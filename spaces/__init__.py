"""Genome <-> concrete compressed model."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hilas._lazy import lazy_names

if TYPE_CHECKING:
    from .adapters import AdaptedDrop, AdapterSites, DropAdapters, adapter_sites, fold_adapters
    from .binary import BinaryWidthSpace, BiRealNet
    from .checks import check_space, run_model
    from .drops import BlockDropSpace, find_blocks
    from .masks import ChannelGroup, FilterMaskSpace, find_groups, output_layer
    from .space import ComposedSpace, Space
    from .variant import ModelStats, Variant, model_stats

__getattr__, __dir__, __all__ = lazy_names(__name__, {
    ".adapters": ["AdaptedDrop", "AdapterSites", "DropAdapters", "adapter_sites", "fold_adapters"],
    ".binary": ["BinaryWidthSpace", "BiRealNet"],
    ".variant": ["Variant", "ModelStats", "model_stats"],
    ".checks": ["check_space", "run_model"],
    ".drops": ["BlockDropSpace", "find_blocks"],
    ".masks": ["ChannelGroup", "FilterMaskSpace", "find_groups", "output_layer"],
    ".space": ["ComposedSpace", "Space"],
})
