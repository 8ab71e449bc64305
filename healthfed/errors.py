"""One error tree for the whole package.

Library code raises these; only the CLI turns them into exit codes and messages.
Every message names the file, field, argument or site it is about, so a data
steward or researcher can act on it without reading a traceback.
"""

from __future__ import annotations


class HealthfedError(Exception):
    """Base class of every error healthfed raises on purpose."""


class DataError(HealthfedError):
    """A data file or dataset descriptor is missing, malformed or inconsistent."""


class PolicyError(HealthfedError):
    """A site policy file is malformed."""


class PolicyDenied(HealthfedError):
    """A node's policy refused a request (unknown computation, too many levels, ...)."""


class PermitError(HealthfedError):
    """A data permit is missing, invalid, expired or does not cover the request."""


class PrivacyError(HealthfedError):
    """A privacy rule stopped a release. Nodes fail closed: nothing is released."""


class ThresholdViolation(PrivacyError):
    """A release would reveal a count or statistic below the site's minimum."""


class BudgetExceeded(PrivacyError):
    """A differentially private release would exceed the site's privacy budget."""


class FederationError(HealthfedError):
    """The federation could not run a request (no nodes, transport failure, ...)."""


class NodeTimeout(FederationError):
    """One or more nodes did not answer in time; ``sites`` names them."""

    def __init__(self, message: str, sites: list[str]) -> None:
        super().__init__(message)
        self.sites = sites
