"""The node: a hospital's datasets plus its site policy, answering vetted requests.

A request is data, never code: it names one of healthfed's registered
computations, a dataset and parameters. The node looks the computation up in
its own installed registry, validates the parameters against its policy,
runs it over its local data in DuckDB and passes the result through its
disclosure filter. Only that filtered dict leaves the node.

A node is described by one TOML file the data steward owns::

    [node]
    name = "hospital_1"

    [policy]                 # optional; defaults are the safe ones
    min_cell_count = 5

    [governance]             # makes the node *governed* (see below)
    trusted_hub_keys = ["../hub/hub_public_key.txt"]

    [approval]               # per computation: "auto" (default) or "manual"
    table1 = "manual"

    [catalogue]              # optional HealthDCAT-AP metadata for `catalogue publish`
    publisher = "Hospital 1, Data Office"

    [[datasets]]
    descriptor = "covid.toml"   # relative to this file

Governance
----------
A node with a ``[governance]`` table (what ``healthfed node init --hub-key``
writes) is **governed**. For every request, before any data is opened, it
checks the request's signed data permit (``healthfed.governance.permit``:
trusted hub, signature, validity window, requester, purpose, dataset,
computation, variables); a request without a permit runs nothing. It then
applies the stricter of its own policy and the permit's output rules, excludes
patients who opted out (``healthfed.node.optout``) from the ``data`` view every
computation reads, and — for computations its ``[approval]`` table marks
``manual`` — holds the disclosed result in its airlock
(``healthfed.node.airlock``) until the data steward approves it. Every decision
(released, refused with the failed check, pending, error) is appended to the
node's hash-chained audit log with the sizes released, suppressed cells and
opted-out patients excluded (rounded).

A node without ``[governance]`` (e.g. built in Python as ``Node(name,
datasets)``) is an **ungoverned sandbox**: it runs requests without a permit and
logs a warning saying it is for synthetic data only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import threading
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from healthfed.errors import (
    DataError,
    HealthfedError,
    PermitError,
    PolicyDenied,
    PolicyError,
    PrivacyError,
)
from healthfed.governance.node_config import NodeGovernance
from healthfed.policy import SitePolicy

log = logging.getLogger(__name__)

REQUEST_FIELDS = {
    "computation",
    "dataset",
    "params",
    "request_id",
    "requester",
    "permit",
    "purpose",
}


def round_count(n: int, base: int) -> int:
    """``n`` rounded to the nearest multiple of ``base`` (what audit records show)."""
    base = max(1, int(base))
    return int(base * math.floor(n / base + 0.5))


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
    _checked_cohorts: dict[Any, int] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_toml(cls, path: str | Path) -> Node:
        """Build a node from its TOML file; errors name the file and field."""
        from healthfed.data.dataset import NodeDataset

        path = Path(path).resolve()
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise PolicyError(f"node file not found: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise PolicyError(f"{path}: not valid TOML: {exc}") from None
        node = raw.get("node", {})
        name = node.get("name")
        if not isinstance(name, str) or not name:
            raise PolicyError(f"{path}: [node].name is missing")
        policy = SitePolicy.from_dict(raw.get("policy", {}), source=f"{path} [policy]")
        cache_dir = node.get("cache_dir")
        cache = (path.parent / cache_dir) if cache_dir else None
        entries = raw.get("datasets", [])
        if not isinstance(entries, list) or not entries:
            raise PolicyError(f"{path}: declare at least one [[datasets]] entry")
        datasets: dict[str, Any] = {}
        for i, entry in enumerate(entries):
            desc = entry.get("descriptor") if isinstance(entry, dict) else None
            if not isinstance(desc, str):
                raise PolicyError(f"{path}: [[datasets]] entry {i} needs a 'descriptor' path")
            ds = NodeDataset.from_descriptor_file(path.parent / desc, cache_dir=cache)
            if ds.name in datasets:
                raise PolicyError(f"{path}: dataset name {ds.name!r} declared twice")
            datasets[ds.name] = ds
        governance = None
        if "governance" in raw:
            if not isinstance(raw["governance"], dict):
                raise PolicyError(f"{path}: [governance] must be a table")
            governance = NodeGovernance.from_tables(
                raw["governance"],
                raw.get("approval"),
                base_dir=path.parent,
                default_state_dir=f"{path.stem}.state",
                source=str(path),
            )
        elif "approval" in raw:
            raise PolicyError(f"{path}: [approval] needs a [governance] table")
        catalogue = raw.get("catalogue", {})
        if not isinstance(catalogue, dict):
            raise PolicyError(f"{path}: [catalogue] must be a table")
        return cls(
            name=name,
            datasets=datasets,
            policy=policy,
            governance=governance,
            catalogue=catalogue,
        )

    # --- governance state ------------------------------------------------------------------------
    @property
    def governed(self) -> bool:
        return self.governance is not None

    @property
    def audit(self) -> Any:
        """The node's :class:`~healthfed.governance.audit.AuditLog`, or None if ungoverned."""
        from healthfed.governance.audit import AuditLog

        if self.governance is None or self.governance.audit_log is None:
            return None
        return AuditLog(self.governance.audit_log)

    @property
    def optouts(self) -> Any:
        """The node's :class:`~healthfed.node.optout.OptOutStore`, or None if ungoverned."""
        from healthfed.node.optout import OptOutStore

        if self.governance is None or self.governance.optout_store is None:
            return None
        return OptOutStore(self.governance.optout_store)

    @property
    def approvals(self) -> Any:
        """The node's :class:`~healthfed.node.airlock.ApprovalQueue`, or None if ungoverned."""
        from healthfed.node.airlock import ApprovalQueue

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

    # --- answering ----------------------------------------------------------------------------
    def handle(self, request: dict[str, Any], *, secure: bool = False) -> dict[str, Any]:
        """Answer one request; never raises, never returns rows.

        ``secure=True`` is set by the node's own SecAgg+ handler
        (:mod:`healthfed.federation.secure`), never by a request: the result is
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
            "permit_id": _permit_id(req.get("permit")),
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
        reply: dict[str, Any]
        try:
            status, payload = self._answer(request, info)
        except PermitError as exc:
            check = getattr(exc, "check", None)
            log.info("site %s refused request (permit): %s", self.name, exc)
            reply = {**base, "status": "refused", "reason": str(exc), "kind": type(exc).__name__}
            if check:
                reply["check"] = check
            self._audit_decision(info, "refused", reason=str(exc), check=check)
            return reply
        except (PolicyDenied, PrivacyError, DataError, PolicyError) as exc:
            log.info("site %s refused request: %s", self.name, exc)
            self._audit_decision(info, "refused", reason=str(exc), check=type(exc).__name__)
            return {**base, "status": "refused", "reason": str(exc), "kind": type(exc).__name__}
        except HealthfedError as exc:
            self._audit_decision(info, "error", reason=str(exc))
            return {**base, "status": "error", "reason": str(exc), "kind": type(exc).__name__}
        except Exception as exc:  # noqa: BLE001 - a node must answer, and must not leak
            log.exception("site %s failed on a request", self.name)
            reason = f"internal error at site {self.name!r} ({type(exc).__name__})"
            self._audit_decision(info, "error", reason=reason)
            return {**base, "status": "error", "reason": reason, "kind": type(exc).__name__}
        if status == "pending":
            self._audit_decision(info, "pending", reason=payload["reason"])
            return {**base, "status": "pending", **payload}
        audited = self._audit_decision(
            info,
            "released",
            released_bytes=len(json.dumps(payload, allow_nan=False, default=str)),
            suppressed_cells=_suppressed_cells(payload),
        )
        if not audited:  # fail closed: nothing leaves a governed node unaudited
            return {
                **base,
                "status": "error",
                "reason": f"site {self.name!r} could not write its audit log; nothing released",
                "kind": "AuditError",
            }
        return {**base, "status": "ok", "result": payload}

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
        """(``"ok"``, disclosed result) or (``"pending"``, ticket info); raises on refusal."""
        from healthfed.compute import get_computation

        if not isinstance(request, dict):
            raise PolicyDenied("a request must be a JSON object")
        unknown = sorted(set(request) - REQUEST_FIELDS)
        if unknown:
            raise PolicyDenied(f"request has unknown field(s) {unknown}")
        name = request.get("computation")
        if not isinstance(name, str):
            raise PolicyDenied("request field 'computation' must name a registered computation")
        dataset_name = str(request.get("dataset"))
        raw_params = request.get("params") or {}
        if not isinstance(raw_params, dict):
            raise PolicyDenied("request field 'params' must be an object")
        policy = self.policy
        scope = None
        if self.governance is not None:
            # The permit is checked before anything else, on the request as sent.
            scope = self._check_permit(request, name, dataset_name, raw_params)
            policy = _apply_output_rules(policy, scope.output_rules)
        computation = get_computation(name)
        dataset = self.dataset(dataset_name)
        params = computation.validate(raw_params, dataset.descriptor, policy)
        if scope is not None:
            # ... and again on the parameters as the computation normalised them.
            self._check_permit(request, name, dataset_name, params)
        manual = self.governance is not None and self.governance.approval_mode(name) == "manual"
        if not manual:
            return "ok", self._compute(computation, dataset, params, policy, info)
        return self._airlock(request, computation, dataset, raw_params, params, policy, info)

    def _check_permit(
        self, request: dict[str, Any], computation: str, dataset_name: str, params: Any
    ) -> Any:
        from healthfed.governance.permit import check_permit, referenced_variables

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
            variables=referenced_variables(params, columns),
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
        from healthfed.privacy.guard import disclose_any

        with self.privacy_guard.request(
            info.get("permit_id"),
            info.get("request_id"),
            dataset,
            computation.name,
            params,
            policy,
            secure=bool(info.get("secure_aggregation")),
        ) as guarded:
            with _connection(dataset, self.optouts) as con:
                if con.excluded is not None:
                    info["optouts_excluded"] = round_count(con.excluded, policy.min_cell_count)
                self._check_cohort(guarded, con.con, dataset)
                release = computation.run(con.con, dataset.descriptor, params, policy)
            # The node, not the computation, applies the filter; each release type has one.
            result = disclose_any(release, policy)
            guarded.released(result)
        info.update(guarded.audit_fields)
        return result

    def _check_cohort(self, guarded: Any, con: Any, dataset: Any) -> None:
        """Differencing check, skipped when this exact cohort of unchanged data was checked.

        Counting a cohort needs DuckDB; an iterative fit asks the same cohort every
        round. While the data is provably unchanged (the lazy connection still names
        it without opening: same file, no opt-outs applied) a repeat has the size
        already remembered, so the check would add nothing and is not repeated.
        """
        ticket = guarded.ticket
        if ticket is None or not ticket.protected:
            return
        identity = con.data_identity() if hasattr(con, "data_identity") else None
        key = (identity, ticket.dataset, ticket.permit, repr(ticket.cohort))
        if identity is not None and key in self._checked_cohorts:
            ticket.cohort_size = self._checked_cohorts[key]
            return
        if identity is None:
            guarded.check_cohort(con)
            return
        # Count on a connection of its own, so the request's lazy connection stays
        # unopened and the computation's caches keep recognising the data.
        scratch = dataset.connect()
        try:
            guarded.check_cohort(scratch)
        finally:
            scratch.close()
        if ticket.cohort_size is not None:
            self._checked_cohorts[key] = ticket.cohort_size

    @property
    def privacy_guard(self) -> Any:
        """The node's :class:`~healthfed.privacy.guard.PrivacyGuard` (ledger, cohorts, DP rules).

        Governed nodes keep the budget ledger and cohort memory in their state folder
        (they survive restarts); sandbox nodes keep them in memory.
        """
        from healthfed.privacy.guard import PrivacyGuard

        guard = self.__dict__.get("_privacy_guard")
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
        from healthfed.node.airlock import request_fingerprint

        queue = self.approvals
        permit_id = _permit_id(request.get("permit"))
        fingerprinted = raw_params
        if info.get("secure_aggregation"):  # approving a masked release is a separate decision
            fingerprinted = {**raw_params, "(secure aggregation)": True}
        fp = request_fingerprint(
            permit_id, request.get("requester"), computation.name, dataset.name, fingerprinted
        )
        ticket = queue.by_fingerprint(fp)
        if ticket is None:
            # Run and disclose now; keep the disclosed result until the steward decides.
            result = self._compute(computation, dataset, params, policy, info)
            checks = {
                "disclosure": "passed",
                "suppressed_cells": _suppressed_cells(result),
                "released_bytes": len(json.dumps(result, allow_nan=False, default=str)),
                "optouts_excluded": info.get("optouts_excluded"),
            }
            ticket = queue.add(
                fp,
                requester=request.get("requester"),
                permit_id=permit_id,
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

    # --- the data steward's airlock actions ------------------------------------------------
    def decide(self, ticket: str, approve: bool, by: str, reason: str | None = None) -> Any:
        """Approve or reject a queued request (audited); returns the updated ticket."""
        if self.governance is None:
            raise PolicyError(f"site {self.name!r} is ungoverned: it has no approval queue")
        status = "approved" if approve else "rejected"
        t = self.approvals.decide(ticket, status, by=by, reason=reason)
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


def _permit_id(permit: Any) -> str | None:
    if isinstance(permit, dict) and isinstance(permit.get("permit"), dict):
        pid = permit["permit"].get("permit_id")
        return pid if isinstance(pid, str) else None
    return None


def _suppressed_cells(result: Any) -> int | None:
    if isinstance(result, dict) and isinstance(result.get("suppressed_cells"), int):
        return int(result["suppressed_cells"])
    return None


def _apply_output_rules(policy: SitePolicy, rules: dict[str, Any]) -> SitePolicy:
    """The stricter of the site's policy and the permit's output rules (never looser)."""
    changes: dict[str, Any] = {}
    for name in ("min_cell_count", "min_subset"):
        value = rules.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > getattr(policy, name):
            changes[name] = value
    return replace(policy, **changes) if changes else policy


class _OpenData:
    """The request's data: a (lazy) connection whose ``data`` view excludes opted-out patients."""

    def __init__(self, con: Any, excluded: int | None) -> None:
        self.con = con
        self.excluded = excluded


class _LazyConnection:
    """A dataset's DuckDB connection for one request, opened on first use.

    Behaves as the ``duckdb`` connection (attribute access opens it), so a
    computation that answers from the node's in-process caches (e.g. an
    iterative fit's later rounds, see :func:`healthfed.compute.preprocess.cached_design`)
    never pays for opening DuckDB. :meth:`data_identity` names the rows of the
    view ``data`` without opening it, and only while nothing could have changed
    that view: once the connection is open (a computation may rename or replace
    ``data``, as the opt-out exclusion and subgroup filters do), it returns None
    and callers identify the data through the connection itself.
    """

    def __init__(self, dataset: Any) -> None:
        self._dataset = dataset
        self._con: Any = None
        self._closed = False

    @property
    def opened(self) -> bool:
        return self._con is not None

    def _open(self) -> Any:
        if self._closed:
            # Never reopen: a fresh connection would not carry this request's view
            # (e.g. the opt-out exclusion). As a closed duckdb connection does:
            import duckdb

            raise duckdb.ConnectionException("Connection already closed!")
        if self._con is None:
            self._con = self._dataset.connect()
        return self._con

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_dataset", "_con", "_closed"):
            raise AttributeError(name)
        return getattr(self._open(), name)

    def data_identity(self) -> tuple[Any, ...] | None:
        """Identity of the rows behind ``data`` (file + size + mtime + view), or None."""
        if self._con is not None or self._closed:
            return None
        identity = getattr(self._dataset, "data_identity", None)
        return identity() if callable(identity) else None

    def close(self) -> None:
        self._closed = True
        if self._con is not None:
            con, self._con = self._con, None
            con.close()

    def __enter__(self) -> _LazyConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _connection:
    """The dataset's DuckDB connection for one request, always closed afterwards.

    With an opt-out store holding opt-outs, the connection is opened at once and
    the dataset's ``data`` view is renamed and replaced by one without the
    opted-out patients (matched on the keyed hash of the id column), so every
    computation — statistics and models alike — reads only the remaining
    patients; ``excluded`` counts the rows dropped. The opt-out table's name
    carries a digest of the opt-out set, so the view's SQL (which in-process
    caches use to identify the data) changes whenever the set does. Without
    opt-outs to apply the connection opens lazily, on the computation's first
    use of it (:class:`_LazyConnection`).
    """

    def __init__(self, dataset: Any, optouts: Any = None) -> None:
        self._dataset = dataset
        self._optouts = optouts

    def __enter__(self) -> _OpenData:
        self._con = _LazyConnection(self._dataset)
        try:
            excluded = self._exclude_optouts()
        except Exception:
            self._con.close()
            raise
        return _OpenData(self._con, excluded)

    def _exclude_optouts(self) -> int | None:
        if self._optouts is None:
            return None
        hashes = self._optouts.hashes()
        if not hashes:
            return 0
        id_col = self._dataset.descriptor.id_column
        expr = self._optouts.sql_hash('"' + id_col.replace('"', '""') + '"')
        if expr is None:  # pragma: no cover - hashes exist only with a key
            return 0
        digest = hashlib.sha256("\n".join(sorted(hashes)).encode()).hexdigest()[:16]
        table = f"__healthfed_optouts_{digest}"
        con = self._con
        con.execute("ALTER VIEW data RENAME TO __healthfed_all_rows")
        con.execute(f"CREATE TABLE {table} (h VARCHAR PRIMARY KEY)")
        con.executemany(f"INSERT INTO {table} VALUES (?)", [(h,) for h in hashes])
        con.execute(
            f"CREATE VIEW data AS SELECT * FROM __healthfed_all_rows "
            f"WHERE {expr} NOT IN (SELECT h FROM {table})"
        )
        row = con.execute(
            f"SELECT count(*) FROM __healthfed_all_rows WHERE {expr} IN (SELECT h FROM {table})"
        ).fetchone()
        return int(row[0]) if row else 0

    def __exit__(self, *exc: object) -> None:
        self._con.close()


_cache_lock = threading.Lock()
_node_cache: dict[str, Node] = {}


def load_node(path: str | Path) -> Node:
    """A node from its TOML file, cached per path so data loads lazily and once."""
    key = str(Path(path).resolve())
    with _cache_lock:
        if key not in _node_cache:
            _node_cache[key] = Node.from_toml(key)
        return _node_cache[key]


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def write_node_file(
    path: str | Path,
    name: str,
    descriptors: list[str | Path],
    policy: SitePolicy | None = None,
    hub_keys: list[str | Path] | None = None,
    approval: dict[str, str] | None = None,
) -> Path:
    """Write a node TOML (name, policy, governance, dataset descriptors) for a steward to edit.

    Descriptor paths are written relative to the node file, so the folder holding
    both can be moved as a whole.

    Parameters
    ----------
    hub_keys
        Public keys of the hubs whose permits the node accepts: files (written
        relative to the node file) or base64 text. Given (even empty), the node is
        governed and gets a ``[governance]`` table with its state folder
        ``<stem>.state``; ``None`` writes an ungoverned sandbox node.
    approval
        Computation -> ``"auto"``/``"manual"`` for the ``[approval]`` table.
    """
    path = Path(path).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["[node]", f"name = {_toml_value(name)}", "", "[policy]"]
    for key, value in (policy or SitePolicy()).to_dict().items():
        lines.append(f"{key} = {_toml_value(value)}")
    if hub_keys is not None:
        keys = []
        for k in hub_keys:
            p = Path(k)
            try:
                is_file = p.is_file()
            except OSError:
                is_file = False
            keys.append(os.path.relpath(p.resolve(), path.parent) if is_file else str(k).strip())
        state = f"{path.stem}.state"
        lines += [
            "",
            "[governance]",
            f"trusted_hub_keys = {_toml_value(keys)}",
            f"state_dir = {_toml_value(state)}",
            "",
            "[approval]",
            'default = "auto"',
        ]
        for comp, mode in sorted((approval or {}).items()):
            lines.append(f"{comp} = {_toml_value(mode)}")
    elif approval:
        raise PolicyError("an [approval] table needs a governed node (give hub_keys)")
    for desc in descriptors:
        rel = os.path.relpath(Path(desc).resolve(), path.parent)
        lines += ["", "[[datasets]]", f"descriptor = {_toml_value(rel)}"]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(path)
    if hub_keys is not None:
        Node.from_toml(path)  # fail now, naming the file, if a key cannot be read
    return path
