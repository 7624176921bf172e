"""Weights delivery: the weights board and the acting lag it resolves."""
