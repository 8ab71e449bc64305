"""The node: a hospital's datasets plus its site policy, answering vetted requests.

A request is data, never code: it names one of healthfed's registered
computations, a dataset and parameters. The node looks the computation up in
its own installed registry, refuses parameters the computation does not accept,
validates the others against its policy, runs it over its local data in DuckDB
and passes the result through its disclosure filter. Only that filtered dict
leaves the node. A node is described by one TOML file the data steward owns
(:mod:`healthfed.node.config`).

Governance
----------
A node with a ``[governance]`` table (what ``healthfed node init --hub-key``
writes) is **governed**. For every request, before any data is opened, it
checks the request's signed data permit (``healthfed.governance.permit``:
trusted hub, signature, validity window, requester, purpose, dataset,
computation, variables); a request without a permit runs nothing. It then
applies the stricter of its own policy and the permit's output rules, excludes
patients who opted out (``healthfed.node.optout``) from the ``data`` view every
computation reads (:mod:`healthfed.node.connection`), and — for computations
its ``[approval]`` table marks ``manual`` — holds the disclosed result in its
airlock (``healthfed.node.airlock``) until the data steward approves it. Every
decision (released, refused with the failed check, pending, error) is appended
to the node's hash-chained audit log with the sizes released, suppressed cells
and opted-out patients excluded (rounded).

A node without ``[governance]`` (e.g. built in Python as ``Node(name,
datasets)``) is an **ungoverned sandbox**: it runs requests without a permit and
logs a warning saying it is for synthetic data only.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from healthfed.compute import get_computation
from healthfed.compute.subgroups import DERIVED_VARIABLES
from healthfed.data.dataset import leased_connection
from healthfed.errors import (
    DataError,
    HealthfedError,
    PermitError,
    PolicyDenied,
    PolicyError,
    PrivacyError,
)
from healthfed.governance.audit import AuditLog
from healthfed.governance.canonical import sha256_hex
from healthfed.governance.node_config import NodeGovernance
from healthfed.governance.permit import check_permit, referenced_variables
from healthfed.node.airlock import ApprovalQueue, request_fingerprint
from healthfed.node.config import read_node_file, write_node_file
from healthfed.node.connection import RequestConnection
from healthfed.node.limits import check_request_shape, check_workload, request_deadline
from healthfed.node.memory import no_huge_page_advice
from healthfed.node.optout import OptOutStore
from healthfed.node.request import (
    apply_output_rules,
    parse_request,
    permit_id,
    released_bytes,
    round_count,
    suppressed_cells,
)
from healthfed.policy import SitePolicy
from healthfed.privacy.cellkey import node_record_keys, using_record_keys
from healthfed.privacy.guard import PrivacyGuard, disclose_any

__all__ = ["Node", "load_node", "round_count", "write_node_file"]

log = logging.getLogger(__name__)


@dataclass
class Node:
    """One hospital node: named datasets, the site's policy and (optionally) its governance.

    Parameters
    ----------
    name
        The site's name as the hub and results show it.
    datasets
        ``NodeDataset`` objects by dataset name. They are opened lazily, per request.
    policy
        The site's disclosure policy.
    governance
        Trusted hub keys, accepted purposes, approval modes and state paths; ``None``
        makes an ungoverned sandbox node (no permit needed; synthetic data only).
    catalogue
        Site-wide HealthDCAT-AP metadata (``[catalogue]`` table) for catalogue entries.
    clock
        Returns "now" (aware UTC) for permit validity; tests substitute it.
    """

    name: str
    datasets: dict[str, Any]
    policy: SitePolicy = field(default_factory=SitePolicy)
    governance: NodeGovernance | None = None
    catalogue: dict[str, Any] = field(default_factory=dict)
    clock: Callable[[], datetime] | None = None
    _warned: bool = field(default=False, repr=False, compare=False)
    _bounds_checked: set[str] = field(default_factory=set, repr=False, compare=False)
    _checked_cohorts: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        no_huge_page_advice()  # fresh arrays without direct compaction: healthfed.node.memory

    @classmethod
    def from_toml(cls, path: str | Path, dataset_errors: dict[str, str] | None = None) -> Node:
        """Build a node from its TOML file; errors name the file and field.

        ``dataset_errors``: collect the errors of datasets whose descriptor cannot be
        loaded there (by descriptor path) and leave those datasets out, instead of raising.
        """
        f = read_node_file(path, dataset_errors)
        return cls(
            name=f.name,
            datasets=f.datasets,
            policy=f.policy,
            governance=f.governance,
            catalogue=f.catalogue,
        )

    # --- governance state ------------------------------------------------------------------------
    @property
    def governed(self) -> bool:
        return self.governance is not None

    @property
    def audit(self) -> AuditLog | None:
        """The node's :class:`~healthfed.governance.audit.AuditLog`, or None if ungoverned."""
        if self.governance is None or self.governance.audit_log is None:
            return None
        return AuditLog(self.governance.audit_log)

    @property
    def optouts(self) -> OptOutStore | None:
        """The node's :class:`~healthfed.node.optout.OptOutStore`, or None if ungoverned."""
        if self.governance is None or self.governance.optout_store is None:
            return None
        return OptOutStore(self.governance.optout_store)

    @property
    def approvals(self) -> ApprovalQueue | None:
        """The node's :class:`~healthfed.node.airlock.ApprovalQueue`, or None if ungoverned."""
        if self.governance is None or self.governance.approvals is None:
            return None
        return ApprovalQueue(self.governance.approvals)

    def record(self, entry: dict[str, Any]) -> None:
        """Append ``entry`` to the node's audit log (no-op for an ungoverned node)."""
        audit = self.audit
        if audit is not None:
            audit.append({"site": self.name, **entry})

    def dataset(self, name: str) -> Any:
        try:
            return self.datasets[name]
        except KeyError:
            raise PolicyDenied(
                f"site {self.name!r} holds no dataset {name!r}; it holds {sorted(self.datasets)}"
            ) from None

    def prewarm(self) -> list[str]:
        """Check every dataset now rather than on its first request; the unusable ones' names.

        What the first request of each dataset would otherwise pay: the data check
        (``validate``, stamped per file) and the bounds scan, both independent of any
        request. A deployed node's data worker calls it when it starts, so a bad file is
        in the node's log before a researcher asks. Nothing is registered, counted or
        released; a dataset that fails stays refused, with the same reason, on request.
        """
        unusable = []
        for name, dataset in sorted(self.datasets.items()):
            try:
                self._usable(dataset)
            except DataError:
                unusable.append(name)
        return unusable

    # --- answering ----------------------------------------------------------------------------
    def handle(self, request: dict[str, Any], *, secure: bool = False) -> dict[str, Any]:
        """Answer one request; never raises, never returns rows.

        ``secure=True`` is set by the node's own SecAgg+ handler
        (:mod:`healthfed.federation.secure_client`), never by a request: the result is
        masked before it leaves, which is what ``secure_aggregation_required`` asks.

        The reply is ``{"site", "status": "ok", "result"}`` on success;
        ``{"site", "status": "pending", "ticket", "reason"}`` when the site reviews
        the release by hand; ``{"site", "status": "refused", "reason", "kind"}``
        (plus ``"check"`` for a permit refusal) when the permit, the policy, the
        data or the disclosure filter stopped it. Unexpected failures are reported
        as ``"error"`` without their traceback (it could quote data). A governed
        node appends every decision to its audit log.
        """
        req = request if isinstance(request, dict) else {}
        base = {"site": self.name, "request_id": req.get("request_id")}
        info: dict[str, Any] = {
            "action": "request",
            "actor": req.get("requester"),
            "request_id": req.get("request_id"),
            "computation": req.get("computation"),
            "dataset": req.get("dataset"),
            "permit_id": permit_id(req.get("permit")),
        }
        if secure:
            info["secure_aggregation"] = True
        if not self.governed and not self._warned:
            self._warned = True
            log.warning(
                "site %s is an ungoverned sandbox node: it runs requests without a data permit; "
                "use it for synthetic data only",
                self.name,
            )
        try:
            status, payload = self._answer(request, info)
        except Exception as exc:  # noqa: BLE001 - a node must answer, and must not leak
            return self._failed(exc, base, info)
        if status == "pending":
            self._audit_decision(info, "pending", reason=payload["reason"])
            return {**base, "status": "pending", **payload}
        audited = self._audit_decision(
            info,
            "released",
            released_bytes=released_bytes(payload),
            suppressed_cells=suppressed_cells(payload),
        )
        if not audited:  # fail closed: nothing leaves a governed node unaudited
            return {
                **base,
                "status": "error",
                "reason": f"site {self.name!r} could not write its audit log; nothing released",
                "kind": "AuditError",
            }
        return {**base, "status": "ok", "result": payload}

    def _failed(self, exc: Exception, base: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
        """The reply (and audit record) for a request that raised ``exc``.

        Called while ``exc`` is being handled, so an unexpected failure's traceback
        is logged at the node (never sent).
        """
        kind = type(exc).__name__
        if isinstance(exc, PermitError):
            check = getattr(exc, "check", None)
            log.info("site %s refused request (permit): %s", self.name, exc)
            reply = {**base, "status": "refused", "reason": str(exc), "kind": kind}
            if check:
                reply["check"] = check
            self._audit_decision(info, "refused", reason=str(exc), check=check)
            return reply
        if isinstance(exc, PolicyDenied | PrivacyError | DataError | PolicyError):
            log.info("site %s refused request: %s", self.name, exc)
            self._audit_decision(info, "refused", reason=str(exc), check=kind)
            return {**base, "status": "refused", "reason": str(exc), "kind": kind}
        if isinstance(exc, HealthfedError):
            self._audit_decision(info, "error", reason=str(exc))
            return {**base, "status": "error", "reason": str(exc), "kind": kind}
        log.exception("site %s failed on a request", self.name)
        reason = f"internal error at site {self.name!r} ({kind})"
        self._audit_decision(info, "error", reason=reason)
        return {**base, "status": "error", "reason": reason, "kind": kind}

    def _audit_decision(self, info: dict[str, Any], decision: str, **extra: Any) -> bool:
        """Append the decision to the audit log; False if that failed (logged)."""
        if not self.governed:
            return True
        try:
            self.record({**info, "decision": decision, **extra})
        except Exception:  # noqa: BLE001 - a node must answer; the caller fails closed
            log.exception("site %s could not write its audit log", self.name)
            return False
        return True

    def _answer(self, request: Any, info: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """(``"ok"``, disclosed result) or (``"pending"``, ticket info); raises on refusal.

        The pipeline: request shape, permit (on the request as sent), the stricter
        of the site's policy and the permit's output rules, the computation's
        accepted parameters, its ``validate``, the permit again (on the normalised
        parameters), then the computation under the privacy guard and the disclosure
        filter -- or the airlock, for a computation the steward reviews by hand.
        """
        name, dataset_name, raw_params = parse_request(request)
        check_request_shape(name, raw_params, self.policy)  # sizes: before any other work
        policy = self.policy
        scope = None
        if self.governance is not None:
            # The permit is checked before anything else, on the request as sent.
            scope = self._check_permit(request, name, dataset_name, raw_params)
            policy = apply_output_rules(policy, scope.output_rules)
        computation = get_computation(name)
        dataset = self._usable(self.dataset(dataset_name))
        check_workload(name, raw_params, dataset, policy)  # e.g. rows x epochs
        computation.check_params(raw_params)  # an unknown parameter is refused, never ignored
        params = computation.validate(raw_params, dataset.descriptor, policy)
        if scope is not None:
            # ... and again on the parameters as the computation normalised them.
            self._check_permit(request, name, dataset_name, params)
        manual = self.governance is not None and self.governance.approval_mode(name) == "manual"
        if not manual:
            return "ok", self._compute(computation, dataset, params, policy, info)
        return self._airlock(request, computation, dataset, raw_params, params, policy, info)

    def _usable(self, dataset: Any) -> Any:
        """``dataset``, validated; a refusal that names no value and no path if it is not usable.

        The validation error itself (which file, which line, an example value) is for
        the steward: it is logged at the node, and ``healthfed node check`` prints it.
        """
        validate = getattr(dataset, "validate", None)  # duck-typed datasets validate themselves
        try:
            if validate is not None:
                validate()
        except DataError as exc:
            log.warning("site %s: dataset %r is not usable: %s", self.name, dataset.name, exc)
            why = getattr(exc, "public_reason", None) or "it failed the node's data check"
            raise DataError(
                f"site {self.name!r}: dataset {dataset.name!r} is not usable ({why}); "
                "the site's data steward sees why with `healthfed node check`"
            ) from None
        out_of_bounds = getattr(dataset, "out_of_bounds", None)
        if out_of_bounds is not None and dataset.name not in self._bounds_checked:
            self._bounds_checked.add(dataset.name)  # once per dataset and process: the log
            outside = out_of_bounds()
            if outside:
                log.warning(
                    "site %s: dataset %r has values outside the declared bounds in %s: means "
                    "and SDs include them while histograms and quantiles count them at the "
                    "bounds; `healthfed node check` shows them",
                    self.name,
                    dataset.name,
                    sorted(outside),
                )
        return dataset

    def _check_permit(
        self, request: dict[str, Any], computation: str, dataset_name: str, params: Any
    ) -> Any:
        assert self.governance is not None
        columns: list[str] = []
        if dataset_name in self.datasets:
            columns = list(self.datasets[dataset_name].descriptor.columns)
        now = self.clock() if self.clock is not None else datetime.now(UTC)
        return check_permit(
            request.get("permit"),
            trusted=self.governance.trusted_keys,
            site=self.name,
            dataset=dataset_name,
            computation=computation,
            requester=request.get("requester"),
            purpose=request.get("purpose"),
            accepted_purposes=self.governance.accepted_purposes,
            variables=referenced_variables(params, columns, DERIVED_VARIABLES),
            now=now,
        )

    def _compute(
        self,
        computation: Any,
        dataset: Any,
        params: dict[str, Any],
        policy: SitePolicy,
        info: dict[str, Any],
    ) -> dict[str, Any]:
        """Run one admitted request under the privacy guard and the disclosure filter.

        The guard refuses before any data is touched when the request would exceed
        the privacy budget or breaks a DP / secure-aggregation requirement; it
        checks differencing against earlier cohorts of the same permit before the
        computation runs; and it charges the ledger only for what was released.
        """
        with self.privacy_guard.request(
            info.get("permit_id"),
            info.get("request_id"),
            dataset,
            computation.name,
            params,
            policy,
            secure=bool(info.get("secure_aggregation")),
        ) as guarded:
            with (
                RequestConnection(dataset, self.optouts) as con,
                request_deadline(policy, con.con),  # max_request_seconds
            ):
                if con.excluded is not None:
                    info["optouts_excluded"] = round_count(con.excluded, policy.min_cell_count)
                self._check_cohort(guarded, con.con, dataset)
                with using_record_keys(node_record_keys(self._state_dir())):  # cell key method
                    release = computation.run(con.con, dataset.descriptor, params, policy)
            # The node, not the computation, applies the filter; each release type has one.
            result = disclose_any(release, policy)
            guarded.released(result)
        info.update(guarded.audit_fields)
        return result

    def _check_cohort(self, guarded: Any, con: Any, dataset: Any) -> None:
        """Differencing check; the patient set is not recounted for a repeat on unchanged data.

        Counting a cohort needs DuckDB; an iterative fit asks the same cohort every
        round. While the data is provably unchanged (the lazy connection still names
        it without opening: same file, no opt-outs applied) a repeat has the patient
        set counted before, which is checked against the memory again without DuckDB.
        """
        ticket = guarded.ticket
        if ticket is None or not ticket.protected:
            return
        identity = con.data_identity() if hasattr(con, "data_identity") else None
        key = (identity, ticket.dataset, ticket.permit, repr(ticket.cohort))
        if identity is not None and key in self._checked_cohorts:
            guarded.check_known(self._checked_cohorts[key])  # same patients: no recount
            return
        if identity is None:
            guarded.check_cohort(con)
            return
        # Count on a connection of its own, so the request's lazy connection stays
        # unopened and the computation's caches keep recognising the data.
        with leased_connection(dataset) as scratch:
            guarded.check_cohort(scratch)
        if ticket.checked is not None:
            self._checked_cohorts[key] = ticket.checked

    def _state_dir(self) -> Path | None:
        """The governed node's state folder (record-key secret, ledger), or None (sandbox)."""
        return self.governance.state_dir if self.governance is not None else None

    @property
    def privacy_guard(self) -> PrivacyGuard:
        """The node's :class:`~healthfed.privacy.guard.PrivacyGuard` (ledger, cohorts, DP rules).

        Governed nodes keep the budget ledger and cohort memory in their state folder
        (they survive restarts); sandbox nodes keep them in memory.
        """
        guard: PrivacyGuard | None = self.__dict__.get("_privacy_guard")
        if guard is None:
            state = self.governance.state_dir if self.governance is not None else None
            audit = self.record if self.governance is not None else None
            guard = PrivacyGuard(state, self.policy, audit=audit)
            self.__dict__["_privacy_guard"] = guard
        return guard

    def _airlock(
        self,
        request: dict[str, Any],
        computation: Any,
        dataset: Any,
        raw_params: dict[str, Any],
        params: dict[str, Any],
        policy: SitePolicy,
        info: dict[str, Any],
    ) -> tuple[str, dict[str, Any]]:
        """Hold the disclosed result until the data steward approves it (one ticket per request)."""
        queue = self.approvals
        assert queue is not None  # a manual approval mode needs governance, which has a queue
        pid = permit_id(request.get("permit"))
        fingerprinted = raw_params
        if info.get("secure_aggregation"):  # approving a masked release is a separate decision
            fingerprinted = {**raw_params, "(secure aggregation)": True}
        fp = request_fingerprint(
            pid, request.get("requester"), computation.name, dataset.name, fingerprinted
        )
        ticket = queue.by_fingerprint(fp)
        basis = self._optout_basis()
        if (
            ticket is not None
            and ticket.status != "rejected"
            and ticket.checks.get("optout_basis") != basis
        ):
            # A patient opted out (or back in) since this result was computed: it must not
            # leave (again); the request is computed afresh, checked and reviewed anew.
            queue.supersede(ticket.ticket)
            self.record(
                {
                    "action": "airlock_superseded",
                    "decision": "superseded",
                    "ticket": ticket.ticket,
                    "computation": computation.name,
                    "reason": "opt-outs changed since the kept result was computed",
                }
            )
            ticket = None
        if ticket is None:
            # Run and disclose now; keep the disclosed result until the steward decides.
            result = self._compute(computation, dataset, params, policy, info)
            checks = {
                "disclosure": "passed",
                "suppressed_cells": suppressed_cells(result),
                "released_bytes": released_bytes(result),
                "optouts_excluded": info.get("optouts_excluded"),
                "optout_basis": basis,
            }
            ticket = queue.add(
                fp,
                requester=request.get("requester"),
                permit_id=pid,
                computation=computation.name,
                dataset=dataset.name,
                params=raw_params,
                checks=checks,
                result=result,
            )
        info["ticket"] = ticket.ticket
        if ticket.status == "pending":
            return "pending", {
                "ticket": ticket.ticket,
                "reason": f"pending approval at site {self.name!r} (ticket {ticket.ticket})",
            }
        if ticket.status == "rejected":
            raise PolicyDenied(
                f"the data steward at site {self.name!r} rejected the release (ticket "
                f"{ticket.ticket}): {ticket.reason or 'no reason given'}"
            )
        queue.mark_released(ticket.ticket)
        info["approved_by"] = ticket.decided_by
        assert ticket.result is not None
        return "ok", ticket.result

    def _optout_basis(self) -> str | None:
        """A digest of the current opt-outs: a kept result is released only while it holds."""
        store = self.optouts
        return None if store is None else sha256_hex(sorted(store.hashes()))

    # --- the data steward's airlock actions ------------------------------------------------
    def decide(self, ticket: str, approve: bool, by: str, reason: str | None = None) -> Any:
        """Approve or reject a queued request (audited); returns the updated ticket."""
        queue = self.approvals
        if self.governance is None or queue is None:
            raise PolicyError(f"site {self.name!r} is ungoverned: it has no approval queue")
        status = "approved" if approve else "rejected"
        t = queue.decide(ticket, status, by=by, reason=reason)
        self.record(
            {
                "action": "approve" if approve else "reject",
                "actor": by,
                "ticket": t.ticket,
                "permit_id": t.permit_id,
                "computation": t.computation,
                "dataset": t.dataset,
                "requester": t.requester,
                "decision": status,
                "reason": reason,
                "suppressed_cells": t.checks.get("suppressed_cells"),
                "released_bytes": t.checks.get("released_bytes"),
            }
        )
        return t


_cache_lock = threading.Lock()
_node_cache: dict[str, Node] = {}


def load_node(path: str | Path) -> Node:
    """A node from its TOML file, cached per path so data loads lazily and once."""
    key = str(Path(path).resolve())
    with _cache_lock:
        if key not in _node_cache:
            _node_cache[key] = Node.from_toml(key)
        return _node_cache[key]
