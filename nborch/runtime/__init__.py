"""How one run proceeds: the engine loop, hook delivery, lineage events and metrics."""
