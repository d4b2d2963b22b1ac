"""Long history: compact day blocks, rollups and retention, export and backup (issue 20)."""
