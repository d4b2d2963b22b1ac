"""Detection: per-series baselines and the count-aware surge test, vectorised."""
