"""One error tree for the whole package.

Library code raises these; only the CLI turns them into exit codes and messages
(:func:`exit_code`). Every message names the file, field, argument or site it is
about, so a data steward or researcher can act on it without reading a traceback.

Exit codes: 1 a check failed (e.g. a tampered audit log), 2 refused or bad input
(every error below unless it says otherwise), 3 pending a site's manual approval.
"""

from __future__ import annotations

__all__ = [
    "ApprovalPending",
    "BudgetExceeded",
    "DataError",
    "FederationError",
    "HealthfedError",
    "InvalidArgument",
    "NodeTimeout",
    "PermitError",
    "PermitRefused",
    "PermitRefusedBySites",
    "PolicyDenied",
    "PolicyError",
    "PrivacyError",
    "SecureRefusal",
    "ThresholdViolation",
    "TooFewSites",
    "exit_code",
]


class HealthfedError(Exception):
    """Base class of every error healthfed raises on purpose."""

    exit_code: int = 2


class InvalidArgument(HealthfedError, ValueError):
    """A researcher's or operator's argument is malformed (names the argument).

    Also a ``ValueError``, so code written against scikit-learn's conventions
    (``except ValueError``) still catches a bad estimator parameter.
    """


class DataError(HealthfedError):
    """A data file or dataset descriptor is missing, malformed or inconsistent."""


class PolicyError(HealthfedError):
    """A site policy file is malformed."""


class PolicyDenied(HealthfedError):
    """A node's policy refused a request (unknown computation, too many levels, ...)."""


class PermitError(HealthfedError):
    """A data permit is missing, invalid, expired, revoked or does not cover the request."""


class PermitRefused(PermitError):
    """A node refused a request because of its permit; ``check`` names the failed check."""

    def __init__(self, check: str, message: str, permit_id: str | None = None) -> None:
        super().__init__(f"permit check {check!r} failed: {message}")
        self.check = check
        self.permit_id = permit_id


class PermitRefusedBySites(PermitRefused):
    """Sites refused a round because of its permit, so too few of them contributed.

    Raised by the federation instead of :class:`TooFewSites` when a site's refusal
    names a failed permit check: the permit, not a privacy threshold, is the cause.
    ``refusals`` maps each site that declined to its reason, ``checks`` a site that
    refused because of the permit to the failed check (as in :class:`TooFewSites`).
    """

    def __init__(
        self,
        message: str,
        refusals: dict[str, str] | None = None,
        checks: dict[str, str] | None = None,
    ) -> None:
        HealthfedError.__init__(self, message)
        self.refusals = dict(refusals or {})
        self.checks = dict(checks or {})
        self.check = next(iter(sorted(self.checks.values())), "permit")
        self.permit_id = None


class PrivacyError(HealthfedError):
    """A privacy rule stopped a release. Nodes fail closed: nothing is released."""


class ThresholdViolation(PrivacyError):
    """A release would reveal a count or statistic below the site's minimum."""


class TooFewSites(ThresholdViolation):
    """Fewer sites contributed to a round than a pooled release needs.

    ``refusals`` maps each site that declined to its reason; ``checks`` maps a
    site that refused because of the permit to the failed check.
    """

    def __init__(
        self,
        message: str,
        refusals: dict[str, str] | None = None,
        checks: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.refusals = dict(refusals or {})
        self.checks = dict(checks or {})


class BudgetExceeded(PrivacyError):
    """A differentially private release would exceed the site's privacy budget."""


class SecureRefusal(PrivacyError):
    """A site does not take part in a secure round (the reason goes to the hub)."""


class FederationError(HealthfedError):
    """The federation could not run a request (no nodes, transport failure, ...)."""


class NodeTimeout(FederationError):
    """One or more nodes did not answer in time; ``sites`` names them."""

    def __init__(self, message: str, sites: list[str]) -> None:
        super().__init__(message)
        self.sites = sites


class ApprovalPending(HealthfedError):
    """One or more sites hold the result for manual approval; ``tickets`` maps site -> ticket.

    Not a refusal: re-run the same request (same permit, requester, computation,
    dataset and parameters) after the sites' data stewards approved it.
    """

    exit_code = 3

    def __init__(self, message: str, tickets: dict[str, str]) -> None:
        super().__init__(message)
        self.tickets = tickets


def exit_code(error: BaseException) -> int:
    """The CLI exit code of ``error`` (2 for anything that is not a healthfed error)."""
    return int(getattr(error, "exit_code", 2)) if isinstance(error, HealthfedError) else 2
