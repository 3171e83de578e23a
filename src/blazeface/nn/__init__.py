"""The networks: BlazeBlocks and the spec-driven :class:`BlazeNet`."""

from .blazenet import NUM_COORDS, BlazeNet, BlockSpec, FPNStageSpec, HeadSpec, NetSpec
from .layers import BlazeBlock, DepthToSpace, PaddedConv2d, same_padding

__all__ = ["NUM_COORDS", "BlazeNet", "BlockSpec", "FPNStageSpec", "HeadSpec", "NetSpec", "BlazeBlock",
           "DepthToSpace", "PaddedConv2d", "same_padding"]
