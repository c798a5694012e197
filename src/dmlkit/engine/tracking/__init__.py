"""Experiment trackers a run is also logged to (``run.loggers``); see docs/tracking.md."""
