"""Small-World pruning (Krishnan, Du, Cao 2019): sparse masks chosen before training, fixed while
training, then the optimise step. One import for the tools:

    from cgap_graph.passes.small_world import small_world_masks, apply_masks
"""

from cgap_graph.passes.small_world.apply import (
    MaskKeeper,
    apply_masks,
    load_masks,
    mask_weights,
    masked_violations,
    rescale_init,
    save_masks,
)
from cgap_graph.passes.small_world.masks import (
    TOPOLOGIES,
    SmallWorldMasks,
    build_masks,
    random_masks,
    small_world_masks,
)

__all__ = ["TOPOLOGIES", "MaskKeeper", "SmallWorldMasks", "apply_masks", "build_masks", "load_masks", "mask_weights",
           "masked_violations", "random_masks", "rescale_init", "save_masks", "small_world_masks"]
