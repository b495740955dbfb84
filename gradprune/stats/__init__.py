"""Per-layer gradient statistics and their cross-layer summaries."""
