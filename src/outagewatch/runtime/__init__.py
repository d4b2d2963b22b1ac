"""The drivers: what feeds the pure pipeline core and tells it the time.

engine.py   the live adapter: pipeline + store + journal, told the time
writer.py   the single-process server's writer thread (journal, group commit, ticks)
replay.py   files in event time, as fast as they go
worker.py   scale-out: partitions of the bus, committed to the shared store
demo.py     the live demo's simulated crowd
"""
