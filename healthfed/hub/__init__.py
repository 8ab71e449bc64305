"""The hub: the health data access body's catalogue, applications, permits and register.

:class:`Hub` (:mod:`healthfed.hub.hub`) is the whole access body; its parts are
:mod:`~healthfed.hub.catalogue`, :mod:`~healthfed.hub.applications`,
:mod:`~healthfed.hub.permits` and :mod:`~healthfed.hub.releases` (with the
transparency register), on the shared state of :mod:`~healthfed.hub.core` and the
tables of :mod:`~healthfed.hub.models`.
"""

from healthfed.hub.hub import Hub

__all__ = ["Hub"]
