"""healthfed: federated statistics and AI on health data that never leaves the hospital."""

__version__ = "0.1.0"
