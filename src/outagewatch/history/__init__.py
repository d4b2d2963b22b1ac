"""Long history on top of the store: the background compactor, the 90-day view, export and
backup. How the counts are kept (day blocks, rollup tiers, retention, their codec) is the
store's: store/codec.py, store/rollup.py, store/counts.py."""
