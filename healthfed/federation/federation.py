"""The researcher's handle on a federation of hospital nodes.

``Federation`` hides the engine: ``Federation.inprocess(nodes)`` drives the
nodes in this process (the embedded default and the tests),
``Federation.flower(node_files)`` starts a real Flower SuperLink and one
SuperNode per hospital on loopback. Either way a request is one round of the
same ServerApp routine, the nodes answer with disclosure-checked aggregates,
and the registered computation's ``combine`` builds the result at the hub.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from healthfed.errors import FederationError, ThresholdViolation
from healthfed.node.runtime import Node

Transport = Callable[[dict[str, Any], float], dict[str, Any]]

DEFAULT_TIMEOUT_S = 120.0
HUB_MIN_SITES = 2


@dataclass
class RoundOutcome:
    """What one round produced before combining: who answered, who refused, who was silent."""

    replies: dict[str, dict[str, Any]]
    refused: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    elapsed_s: float = 0.0

    @property
    def contributed(self) -> list[str]:
        return sorted(self.replies)


class Federation:
    """Runs registered computations across hospital nodes and combines the replies.

    Parameters
    ----------
    transport
        Sends one request envelope to every node and returns ``collect``'s dict.
    sites
        The site names expected to answer (used to name silent nodes).
    engine
        ``"inprocess"`` or ``"flower"``, for reporting.
    min_sites
        Fewest contributing sites for a pooled release (conventions: 2).
    timeout
        Seconds to wait for the nodes in each round.
    """

    def __init__(
        self,
        transport: Transport,
        sites: Sequence[str],
        engine: str,
        min_sites: int = HUB_MIN_SITES,
        timeout: float = DEFAULT_TIMEOUT_S,
        on_close: Callable[[], None] | None = None,
        requester: str = "researcher",
    ) -> None:
        self._transport = transport
        self.sites = list(sites)
        self.engine = engine
        self.min_sites = min_sites
        self.timeout = timeout
        self.requester = requester
        self._on_close = on_close

    # --- construction ---------------------------------------------------------------
    @classmethod
    def inprocess(cls, nodes: Sequence[Node], **kwargs: Any) -> Federation:
        """Nodes in this process, behind Flower's Grid/ClientApp seam (no network)."""
        from healthfed.federation.inprocess import InProcessGrid
        from healthfed.federation.server_app import collect

        grid = InProcessGrid(nodes)

        def transport(request: dict[str, Any], timeout: float) -> dict[str, Any]:
            return collect(grid, request, timeout)

        return cls(transport, grid.site_names, "inprocess", on_close=grid.close, **kwargs)

    @classmethod
    def from_node_files(cls, node_files: Sequence[str | Path], **kwargs: Any) -> Federation:
        """In-process federation of the nodes described by these node TOML files."""
        return cls.inprocess([Node.from_toml(p) for p in node_files], **kwargs)

    @classmethod
    def flower(
        cls, node_files: Sequence[str | Path], work_dir: str | Path | None = None, **kwargs: Any
    ) -> Federation:
        """A real SuperLink and one SuperNode per node file, on loopback with TLS."""
        from healthfed.federation.deploy import LocalFlowerDeployment

        deployment = LocalFlowerDeployment(node_files, work_dir=work_dir)
        deployment.start()
        return cls(
            deployment.run, deployment.site_names, "flower", on_close=deployment.close, **kwargs
        )

    def close(self) -> None:
        if self._on_close is not None:
            self._on_close()
            self._on_close = None

    def __enter__(self) -> Federation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- running ----------------------------------------------------------------------
    def query(
        self, computation: str, dataset: str, params: dict[str, Any] | None = None
    ) -> RoundOutcome:
        """One round: every node runs ``computation`` on ``dataset``; nothing is combined."""
        request = {
            "computation": computation,
            "dataset": dataset,
            "params": params or {},
            "request_id": uuid.uuid4().hex,
            "requester": self.requester,
            "expected_sites": self.sites,
            "timeout": self.timeout,
        }
        raw = self._transport(request, self.timeout)
        outcome = RoundOutcome(
            replies={}, missing=list(raw.get("missing", [])), errors=dict(raw.get("errors", {}))
        )
        outcome.elapsed_s = float(raw.get("elapsed_s", 0.0))
        for site, reply in raw.get("replies", {}).items():
            if reply.get("status") == "ok":
                outcome.replies[site] = reply["result"]
            else:
                outcome.refused[site] = str(reply.get("reason", "no reason given"))
        return outcome

    def run(self, computation: str, dataset: str, params: dict[str, Any] | None = None) -> Any:
        """Run ``computation`` across the nodes and combine the released aggregates.

        Raises
        ------
        ThresholdViolation
            Fewer than ``min_sites`` sites contributed (a pooled release over one
            site would be that site's own numbers under another name).
        """
        from healthfed.compute import get_computation

        comp = get_computation(computation)
        outcome = self.query(computation, dataset, params)
        if len(outcome.replies) < self.min_sites:
            detail = []
            if outcome.refused:
                detail.append(
                    "refused: " + "; ".join(f"{s}: {r}" for s, r in sorted(outcome.refused.items()))
                )
            if outcome.errors:
                detail.append(
                    "errors: " + "; ".join(f"{n}: {r}" for n, r in sorted(outcome.errors.items()))
                )
            if outcome.missing:
                detail.append(f"no answer within {self.timeout:g}s: {', '.join(outcome.missing)}")
            raise ThresholdViolation(
                f"{computation!r} on {dataset!r}: {len(outcome.replies)} site(s) contributed "
                f"({', '.join(outcome.contributed) or 'none'}), the hub needs at least "
                f"{self.min_sites}" + (" — " + " | ".join(detail) if detail else "")
            )
        result = comp.combine(outcome.replies, params or {})
        for name, value in (
            ("missing_sites", outcome.missing),
            ("refusals", outcome.refused),
            ("engine", self.engine),
            ("elapsed_s", outcome.elapsed_s),
        ):
            try:
                setattr(result, name, value)
            except AttributeError:  # pragma: no cover - frozen result types
                pass
        return result

    # --- the researcher's statistics --------------------------------------------------
    def table1(
        self,
        dataset: str,
        variables: Sequence[str],
        by: str | None = None,
        quantiles: Sequence[float] = (0.25, 0.5, 0.75),
    ) -> Any:
        """A "Table 1" in one round: numeric summaries and level counts, by ``by``."""
        params: dict[str, Any] = {"variables": list(variables), "quantiles": list(quantiles)}
        if by is not None:
            params["by"] = by
        return self.run("table1", dataset, params)

    def describe(
        self,
        dataset: str,
        variables: Sequence[str],
        by: str | None = None,
        quantiles: Sequence[float] = (0.25, 0.5, 0.75),
    ) -> Any:
        """Numeric summaries (n, missing, mean, SD, quantiles) pooled and per site."""
        params: dict[str, Any] = {"variables": list(variables), "quantiles": list(quantiles)}
        if by is not None:
            params["by"] = by
        return self.run("describe", dataset, params)

    def crosstab(self, dataset: str, row: str, col: str) -> Any:
        """Counts of two categorical variables with margins, pooled and per site."""
        return self.run("crosstab", dataset, {"row": row, "col": col})

    def count(self, dataset: str, **where: str) -> Any:
        """Number of patients, optionally where one categorical variable equals a level."""
        params: dict[str, Any] = {}
        if where:
            if len(where) != 1:
                raise FederationError("count takes at most one variable=level condition")
            ((var, level),) = where.items()
            params = {"variable": var, "level": str(level)}
        return self.run("count", dataset, params)
