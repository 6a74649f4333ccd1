"""The IR: tracing to an fx graph with static shapes, channel expressions, the channel analysis and the ChannelGraph."""
