"""The hub: the health data access body's catalogue, applications, permits and register."""

from healthfed.hub.hub import Hub

__all__ = ["Hub"]
