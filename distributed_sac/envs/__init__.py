"""Environments: the wrappers and their registry, fast CarRacing, DMC, autopilot, rollouts."""
