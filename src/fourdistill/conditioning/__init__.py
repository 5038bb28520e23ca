"""Per-layer text conditions from the mappers, and the attention processors that deliver them."""
