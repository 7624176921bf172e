"""Distributed SAC-AE on Ray: pixels to continuous control with an actor-learner system."""

__version__ = "0.2.0"
