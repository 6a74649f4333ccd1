"""Graph passes over a traced model: shrink (this file's siblings); saliency, grow, prune, export
and FPGA cost come with the issues that build on the channel graph."""
