"""CGaP passes over the channel graph: saliency, grow, prune, seed, shrink, optimizer carry-over."""
