"""The researcher's handle on a federation of hospital nodes.

``Federation`` hides the engine: ``Federation.inprocess(nodes)`` drives the
nodes in this process (the embedded default and the tests),
``Federation.flower(node_files)`` starts a real Flower SuperLink and one
SuperNode per hospital on loopback, and ``Federation.flower_remote`` works
through the access body's running SuperLink. Either way a request is one round of
the same ServerApp routine, the nodes answer with disclosure-checked aggregates,
and the registered computation's ``combine`` builds the result from them.

Governance: a researcher works under a data permit granted by a health data
access body's hub (``healthfed.hub.Hub``)::

    fed = Federation.inprocess(nodes, permit="P-....json", requester="alice@uni.example")
    fed = fed.with_permit(permit, requester="alice@uni.example")   # or later

The signed permit travels inside every request (JSON, on both engines); each
governed node checks it before touching data and refuses with the failed check
named. A node whose site reviews releases by hand answers "pending": the
round raises :class:`ApprovalPending` listing the sites and tickets; re-run
the same call after the site approved. Given ``hub=`` (a ``Hub`` or its
folder), the pooled result is released through the hub's checks and recorded
for its transparency register.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from healthfed.compute import get_computation
from healthfed.compute.rounds import RoundOutcome
from healthfed.errors import ApprovalPending, FederationError, PermitRefusedBySites, TooFewSites
from healthfed.federation.deploy.local import LocalFlowerDeployment
from healthfed.federation.deploy.remote import SuperLinkSession
from healthfed.federation.grids.inprocess import InProcessGrid
from healthfed.federation.messages import SECURE_LABEL
from healthfed.federation.server_app import serve_request
from healthfed.governance.permit import load_permit
from healthfed.hub import Hub
from healthfed.node.runtime import Node

Transport = Callable[[dict[str, Any], float], dict[str, Any]]

DEFAULT_TIMEOUT_S = 120.0
DEFAULT_MIN_SITES = 2
DEFAULT_NODE_TIMEOUT_S = 5.0  # a deployed node silent this long after the first reply is dropped


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
    node_timeout
        Deployed rounds: once one node answered, the others get this many seconds
        more; a node still silent then (killed mid-round, unreachable) is dropped
        and the round goes on with the rest if at least :attr:`required_sites`
        answered, else raises :class:`~healthfed.errors.TooFewSites` naming it.
        ``None`` waits the full ``timeout`` (sites with very uneven workloads).
    requester
        Who is asking (must be among the permit's authorised persons).
    permit
        The signed data permit (dict, JSON text or path to the permit file); governed
        nodes refuse requests without one.
    purpose
        The purpose the researcher states; nodes check it equals the permit's.
    hub
        A :class:`~healthfed.hub.Hub` (or its folder): pooled results are released
        through its checks and recorded in its register.
    on_round
        Called after every round that released something, as ``on_round(computation,
        dataset, outcome)`` (the command line prints progress with it).
    """

    def __init__(
        self,
        transport: Transport,
        sites: Sequence[str],
        engine: str,
        min_sites: int = DEFAULT_MIN_SITES,
        timeout: float = DEFAULT_TIMEOUT_S,
        on_close: Callable[[], None] | None = None,
        node_timeout: float | None = DEFAULT_NODE_TIMEOUT_S,
        requester: str = "researcher",
        permit: Any = None,
        purpose: str | None = None,
        hub: Any = None,
        on_round: Callable[[str, str, RoundOutcome], None] | None = None,
    ) -> None:
        self._transport = transport
        self.sites = list(sites)
        self.engine = engine
        self.min_sites = min_sites
        self.timeout = timeout
        if node_timeout is not None and not node_timeout > 0:
            raise FederationError(
                f"node_timeout must be positive seconds or None, got {node_timeout!r}"
            )
        self.node_timeout = node_timeout
        self.requester = requester
        self.purpose = purpose
        self.permit: dict[str, Any] | None = None
        self._hub: Any = None
        self._own_hub = False
        self._on_close = on_close
        #: Called after every round that released something, as ``on_round(computation,
        #: dataset, outcome)``; the command line prints progress with it.
        self.on_round = on_round
        if permit is not None:
            self.with_permit(permit)
        if hub is not None:
            self.with_hub(hub)

    def with_permit(
        self, permit: Any, requester: str | None = None, purpose: str | None = None
    ) -> Federation:
        """Send ``permit`` (dict, JSON text or file path) with every request; returns self."""
        self.permit = load_permit(permit)
        if requester is not None:
            self.requester = requester
        if purpose is not None:
            self.purpose = purpose
        return self

    def with_hub(self, hub: Any) -> Federation:
        """Release pooled results through ``hub`` (a ``Hub`` or its folder); returns self."""
        if isinstance(hub, Hub):
            self._hub, self._own_hub = hub, False
        else:
            self._hub, self._own_hub = Hub.open(hub), True
        return self

    @property
    def permit_id(self) -> str | None:
        if self.permit and isinstance(self.permit.get("permit"), dict):
            return self.permit["permit"].get("permit_id")
        return None

    # --- construction ---------------------------------------------------------------
    @classmethod
    def inprocess(cls, nodes: Sequence[Node], **kwargs: Any) -> Federation:
        """Nodes in this process, behind Flower's Grid/ClientApp seam (no network)."""
        grid = InProcessGrid(nodes)

        def transport(request: dict[str, Any], timeout: float) -> dict[str, Any]:
            return serve_request(grid, request, timeout)

        return cls(transport, grid.site_names, "inprocess", on_close=grid.close, **kwargs)

    @classmethod
    def from_node_files(cls, node_files: Sequence[str | Path], **kwargs: Any) -> Federation:
        """In-process federation of the nodes described by these node TOML files."""
        return cls.inprocess([Node.from_toml(p) for p in node_files], **kwargs)

    @classmethod
    def flower(
        cls,
        node_files: Sequence[str | Path],
        work_dir: str | Path | None = None,
        *,
        node_kind: str = "healthfed",
        worker_idle: float | None = None,
        **kwargs: Any,
    ) -> Federation:
        """A real SuperLink and one SuperNode per node file, on loopback with TLS.

        ``node_kind="healthfed"`` (default) runs healthfed's SuperNode (short adaptive
        poll, one long-lived data worker per node, idle ``worker_idle`` seconds);
        ``"stock"`` runs ``flower-supernode`` (for comparison).
        """
        deployment = LocalFlowerDeployment(
            node_files,
            work_dir=work_dir,
            node_kind=node_kind,
            worker_idle=worker_idle,
            open_session=True,
        )
        deployment.start()
        return cls(
            deployment.session_run,
            deployment.site_names,
            "flower",
            on_close=deployment.close,
            **kwargs,
        )

    @classmethod
    def flower_remote(
        cls,
        address: str,
        root_certificates: str | Path,
        sites: Sequence[str],
        **kwargs: Any,
    ) -> Federation:
        """The access body's running SuperLink (``healthfed hub serve``), used on its machine.

        ``sites`` names the hospitals expected to answer, so a silent one is reported
        by name. All rounds go to one long ServerApp run (a
        :class:`~healthfed.federation.deploy.remote.SuperLinkSession`) that exchanges
        requests and results with this process through files on the SuperLink's
        machine, which is why this runs where the SuperLink runs. ``close()`` ends
        the run.
        """
        session = SuperLinkSession(address, root_certificates, list(sites))
        return cls(session.request, session.sites, "flower", on_close=session.close, **kwargs)

    def close(self) -> None:
        if self._on_close is not None:
            self._on_close()
            self._on_close = None
        if self._hub is not None and self._own_hub:
            self._hub.close()
            self._hub = None

    def __enter__(self) -> Federation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- running: the one round path ---------------------------------------------------
    def round(
        self,
        computation: str,
        dataset: str,
        params: dict[str, Any] | None = None,
        *,
        secure: bool = False,
    ) -> RoundOutcome:
        """One governed round: every node runs ``computation`` on ``dataset``.

        This is the path every estimator, evaluation and report takes
        (:class:`~healthfed.compute.rounds.Rounds`). ``replies`` holds each contributing
        site's disclosure-checked reply; nothing is combined. With a hub, the round is
        released through the hub's checks and recorded in its register
        (``release_id``). With ``secure=True`` the round is Flower's SecAgg+ (summable
        computations only, :data:`healthfed.privacy.secagg.SECURE_SUMMABLE`):
        ``replies`` holds one entry, the sum over ``secure_sites``, labelled
        ``"(secure aggregate)"``, in the nodes' reply format.

        Raises
        ------
        ApprovalPending
            A site holds its answer for manual approval (names sites and tickets).
        TooFewSites
            Fewer than :attr:`required_sites` sites contributed; each site's refusal
            reason (for a permit: the failed check) is in the message and in
            ``refusals`` / ``checks``.
        PermitError
            With a hub: the permit is revoked, expired or does not cover the round.
        """
        outcome = self._exchange(computation, dataset, params, secure)
        outcome.release_id = self._release(
            computation, dataset, outcome, {"replies": outcome.replies}
        )
        return outcome

    def run(
        self,
        computation: str,
        dataset: str,
        params: dict[str, Any] | None = None,
        *,
        secure: bool = False,
    ) -> Any:
        """Run ``computation`` across the nodes and combine the released aggregates.

        The same governed path as :meth:`round` (same errors); what the aggregator releases
        and records is the combined result. ``secure=True`` pools through Flower's
        SecAgg+: the aggregator sees only the sum over the contributing sites.
        """
        comp = get_computation(computation)
        outcome = self._exchange(computation, dataset, params, secure)
        result = comp.combine(outcome.replies, params or {})
        if secure and isinstance(getattr(result, "sites", None), list):
            result.sites = outcome.contributed  # the sites inside the sum, not its label
        to_dict = getattr(result, "to_dict", None)
        released = to_dict() if callable(to_dict) else {"result": repr(result)}
        suppressed = getattr(result, "suppressed_cells", None)
        rel_id = self._release(
            computation,
            dataset,
            outcome,
            released,
            suppressed if isinstance(suppressed, int) else None,
        )
        for name, value in (
            ("release_id", rel_id),
            ("missing_sites", outcome.missing),
            ("refusals", outcome.refused),
            ("engine", self.engine),
            ("elapsed_s", outcome.elapsed_s),
        ):
            if name == "release_id" and value is None:
                continue
            try:
                setattr(result, name, value)
            except AttributeError:  # pragma: no cover - frozen result types
                pass
        return result

    @property
    def required_sites(self) -> int:
        """Fewest contributing sites for a round: the federation's and the permit's minimum."""
        need = int(self.min_sites)
        body = (self.permit or {}).get("permit")
        if isinstance(body, dict) and isinstance(body.get("output_rules"), dict):
            need = max(need, int(body["output_rules"].get("min_sites", need)))
        return need

    def _exchange(
        self, computation: str, dataset: str, params: dict[str, Any] | None, secure: bool
    ) -> RoundOutcome:
        """Send one request, sort the replies, and apply the pending and minimum-sites rules.

        With a hub, the permit is checked there first: a revoked, expired or foreign
        permit costs the nodes nothing and the researcher gets nothing.
        """
        if self._hub is not None:
            self._hub.check_active(
                self.permit, requester=self.requester, computation=computation, dataset=dataset
            )
        request: dict[str, Any] = {
            "computation": computation,
            "dataset": dataset,
            "params": params or {},
            "request_id": uuid.uuid4().hex,
            "requester": self.requester,
            "expected_sites": self.sites,
            "timeout": self.timeout,
        }
        if self.node_timeout is not None:
            request["node_timeout"] = self.node_timeout
        if self.permit is not None:
            request["permit"] = self.permit
        if self.purpose is not None:
            request["purpose"] = self.purpose
        if secure:
            request["secure"] = True
        outcome = _outcome(self._transport(request, self.timeout), secure)
        label = f"{computation!r} on {dataset!r}"
        if outcome.pending:
            raise ApprovalPending(_pending_message(label, outcome), dict(outcome.pending))
        need = self.required_sites
        if len(outcome.contributed) < need:
            permit_checks = _permit_checks(outcome)
            if permit_checks:
                raise PermitRefusedBySites(
                    _too_few_message(label, outcome, need, self.timeout, self.node_timeout),
                    refusals=outcome.refused,
                    checks=permit_checks,
                )
            raise TooFewSites(
                _too_few_message(label, outcome, need, self.timeout, self.node_timeout),
                refusals=outcome.refused,
                checks=outcome.checks,
            )
        if self.on_round is not None:
            self.on_round(computation, dataset, outcome)
        return outcome

    def _release(
        self,
        computation: str,
        dataset: str,
        outcome: RoundOutcome,
        released: dict[str, Any],
        suppressed_cells: int | None = None,
    ) -> str | None:
        """Release a round through the hub (its checks, its register); ``None`` without one."""
        if self._hub is None:
            return None
        return str(
            self._hub.release(
                self.permit,
                requester=self.requester,
                computation=computation,
                dataset=dataset,
                sites=outcome.contributed,
                result=released,
                suppressed_cells=suppressed_cells,
            )
        )

    # --- the researcher's statistics --------------------------------------------------
    def table1(
        self,
        dataset: str,
        variables: Sequence[str],
        by: str | None = None,
        quantiles: Sequence[float] = (0.25, 0.5, 0.75),
    ) -> Any:
        """A "Table 1" in one round: numeric summaries and level counts, by ``by``."""
        return self.run("table1", dataset, _summary_params(variables, by, quantiles))

    def describe(
        self,
        dataset: str,
        variables: Sequence[str],
        by: str | None = None,
        quantiles: Sequence[float] = (0.25, 0.5, 0.75),
    ) -> Any:
        """Numeric summaries (n, missing, mean, SD, quantiles) pooled and per site."""
        return self.run("describe", dataset, _summary_params(variables, by, quantiles))

    def crosstab(self, dataset: str, row: str, col: str) -> Any:
        """Counts of two categorical variables with margins, pooled and per site."""
        return self.run("crosstab", dataset, {"row": row, "col": col})

    def secure_sum(self, dataset: str, variable: str, where: dict[str, Any] | None = None) -> Any:
        """Sum (and n, mean) of a numeric variable pooled by SecAgg+: no site's own sum is seen.

        Each site still applies its thresholds to its own contribution (fewer than
        ``min_subset`` patients, or a few patients dominating its sum, and it does not
        take part); the round is refused with fewer than ``min_sites`` sites in the sum.
        """
        params: dict[str, Any] = {"variable": variable}
        if where:
            params["where"] = where
        return self.run("sum", dataset, params, secure=True)

    def count(self, dataset: str, **where: str) -> Any:
        """Number of patients, optionally where one categorical variable equals a level."""
        params: dict[str, Any] = {}
        if where:
            if len(where) != 1:
                raise FederationError("count takes at most one variable=level condition")
            ((var, level),) = where.items()
            params = {"variable": var, "level": str(level)}
        return self.run("count", dataset, params)


def _summary_params(
    variables: Sequence[str], by: str | None, quantiles: Sequence[float]
) -> dict[str, Any]:
    """Request parameters shared by ``table1`` and ``describe``."""
    params: dict[str, Any] = {"variables": list(variables), "quantiles": list(quantiles)}
    if by is not None:
        params["by"] = by
    return params


def _outcome(raw: dict[str, Any], secure: bool) -> RoundOutcome:
    """Sort the transport's collected replies into contributed, refused, pending."""
    outcome = RoundOutcome(
        replies={}, missing=list(raw.get("missing", [])), errors=dict(raw.get("errors", {}))
    )
    outcome.elapsed_s = float(raw.get("elapsed_s", 0.0))
    outcome.refused.update(raw.get("refused", {}))
    outcome.pending.update(raw.get("pending", {}))
    if secure:
        pooled = raw.get("secure")
        outcome.secure_sites = list(pooled["sites"]) if pooled else []
        if pooled:
            outcome.replies[SECURE_LABEL] = pooled["result"]
        return outcome
    for site, reply in raw.get("replies", {}).items():
        if reply.get("status") == "ok":
            outcome.replies[site] = reply["result"]
        elif reply.get("status") == "pending":
            outcome.pending[site] = str(reply.get("ticket", "?"))
        else:
            outcome.refused[site] = str(reply.get("reason", "no reason given"))
            if reply.get("check"):
                outcome.checks[site] = str(reply["check"])
    return outcome


def _pending_message(label: str, outcome: RoundOutcome) -> str:
    waiting = "; ".join(
        f"pending approval at site {s} (ticket {t})" for s, t in sorted(outcome.pending.items())
    )
    others = (
        " — also refused: "
        + "; ".join(f"{r} (refused by {', '.join(s)})" for r, s in _grouped(outcome.refused))
        if outcome.refused
        else ""
    )
    return (
        f"{label}: {waiting}. Re-run the same request once the site approved it "
        f"(`healthfed node approve NODE_FILE TICKET`){others}"
    )


_PERMIT_PREFIX = "permit check '"


def _permit_checks(outcome: RoundOutcome) -> dict[str, str]:
    """The sites that refused because of the permit, with the failed check.

    A secure round's refusals carry no ``check`` field; their reason starts with the
    node's ``permit check 'NAME' failed`` all the same.
    """
    checks = dict(outcome.checks)
    for site, reason in outcome.refused.items():
        if site not in checks and reason.startswith(_PERMIT_PREFIX):
            checks[site] = reason[len(_PERMIT_PREFIX) :].split("'", 1)[0]
    return checks


def _grouped(items: dict[str, str]) -> list[tuple[str, list[str]]]:
    """``{site: reason}`` as (reason, sites) with each distinct reason once, most sites first."""
    by_reason: dict[str, list[str]] = {}
    for site, reason in sorted(items.items()):
        by_reason.setdefault(reason, []).append(site)
    return sorted(by_reason.items(), key=lambda kv: (-len(kv[1]), kv[1]))


def _too_few_message(
    label: str, outcome: RoundOutcome, need: int, timeout: float, node_timeout: float | None
) -> str:
    """Why a round has too few sites, cause first: each distinct reason once, with its sites.

    The count of contributing sites comes last, as the consequence.
    """
    causes = []
    computation = label.split(" on ", 1)[0].strip("'")
    refused = {
        s: r.removeprefix(f"{computation}: ") for s, r in outcome.refused.items()
    }  # the label names the computation already
    for reason, sites in _grouped(refused):
        every = (
            len(sites) > 1
            and len(sites) == len(outcome.refused)
            and not (outcome.contributed or outcome.errors or outcome.missing)
        )
        who = ("every site: " if every else "") + ", ".join(sites)
        causes.append(f"{reason} (refused by {who})")
    for reason, sites in _grouped(outcome.errors):
        causes.append(f"{reason} (error at {', '.join(sites)})")
    if outcome.missing:
        window = f"{timeout:g}s" + (
            "" if node_timeout is None else f" (or {node_timeout:g}s after the first reply)"
        )
        causes.append(f"no answer within {window} from {', '.join(outcome.missing)}")
    counted = (
        f"{len(outcome.contributed)} site(s) contributed "
        f"({', '.join(outcome.contributed)}), at least {need} needed"
        if outcome.contributed
        else f"no site contributed (a pooled release needs {need})"
    )
    if not causes:
        return f"{label}: {counted}"
    return f"{label}: " + "; ".join(causes) + f" — so {counted}"
