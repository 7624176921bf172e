"""Replay: the ring store, the buffer, the learner's mirror and feed, snapshots, demos."""
