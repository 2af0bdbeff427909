"""The paste filters: one module per concern, :mod:`.stack` composes them."""
