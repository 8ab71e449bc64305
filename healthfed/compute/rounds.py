"""The round seam: what an estimator, an evaluation or a report may ask of a federation.

Estimators live in ``compute`` and never touch a transport: they call
``federation.round(computation, dataset, params)`` on anything that satisfies
:class:`Rounds` (in practice :class:`healthfed.federation.Federation`). That one
method applies the federation's ``min_sites`` rule, names every refusal with its
failed check, raises :class:`~healthfed.errors.ApprovalPending` for sites that
hold a result for manual approval and, when the federation has a hub, releases
the round through the hub (a revoked or expired permit gets nothing; the release
is recorded in the hub's register). So no estimator writes its own "too few
sites" rule, and none can skip the hub.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

__all__ = ["RoundOutcome", "Rounds"]


@dataclass
class RoundOutcome:
    """What one round produced: who answered, who refused, who was silent.

    ``replies`` maps each contributing site to its disclosure-checked reply (in a
    secure round: one entry, the sum over ``secure_sites``). ``pending`` maps a site
    holding the result for manual approval to its ticket; ``checks`` maps a site that
    refused because of the permit to the failed check. ``release_id`` is the hub's
    record of the round when the federation has a hub.
    """

    replies: dict[str, dict[str, Any]]
    refused: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    elapsed_s: float = 0.0
    pending: dict[str, str] = field(default_factory=dict)
    checks: dict[str, str] = field(default_factory=dict)
    secure_sites: list[str] | None = None
    release_id: str | None = None

    @property
    def contributed(self) -> list[str]:
        """Sites whose statistics are in the result (in a secure round: in the sum)."""
        if self.secure_sites is not None:
            return sorted(self.secure_sites)
        return sorted(self.replies)


@runtime_checkable
class Rounds(Protocol):
    """A federation as the estimators see it: one governed round at a time."""

    min_sites: int

    def round(
        self,
        computation: str,
        dataset: str,
        params: dict[str, Any] | None = None,
        *,
        secure: bool = False,
    ) -> RoundOutcome:
        """Run one round of ``computation`` on ``dataset`` under the federation's rules."""
        ...
