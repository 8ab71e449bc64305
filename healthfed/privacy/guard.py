"""The node's privacy guard: site-set minimums that every output path honours.

The node calls the guard around each computation (see :meth:`PrivacyGuard.request`)::

    with guard.request(permit_id, request_id, dataset, computation.name, params) as g:
        with open_connection() as con:          # the node's DuckDB view ``data``
            g.check_cohort(con)                 # differencing protection (needs counts)
            release = computation.run(con, descriptor, params, policy)
        result = disclose_any(release, policy)  # Release / ModelStatistics / DPRelease
        g.released(result)                      # charge the ledger
    audit_fields = g.audit_fields               # ε spent etc. for the audit record

Before anything runs (:meth:`PrivacyGuard.before_run`):

* ``policy.dp_required``: a computation that is not differentially private is refused;
* ``policy.secure_aggregation_required``: a computation that releases sums or model
  updates is refused unless the node answers it inside its own SecAgg+ handler
  (``secure=True``, set by :mod:`healthfed.federation.secure_client`, never by the request);
* a secure round may only carry a summable computation
  (:data:`healthfed.privacy.secagg.SECURE_SUMMABLE`);
* the dataset's **patient population** is found
  (:class:`~healthfed.privacy.population.PopulationRegistry`: shared patient ids,
  or the descriptor's ``population``), so two names, two permits or a copy of the
  same patients share one budget and one memory;
* a DP request's planned cost (from its validated ``dp`` block) is checked against
  the per-request cap, the per-permit cap on its population and the population's
  lifetime cap (``dp_epsilon_per_dataset``) and *reserved* in the ledger in one
  transaction (:class:`~healthfed.privacy.ledger.PrivacyLedger`), so two concurrent
  requests cannot overspend. A request that then fails releases nothing and its
  reservation is cancelled.

With the open connection (:meth:`GuardedRequest.check_cohort`): **every** non-DP
release is an exact aggregate over its effective row set (filter, holdout split,
opt-outs applied), so it is refused when that set of patients differs from one
released earlier for the same population -- by any permit, dataset name or
computation, before or after opt-outs and new rows -- by ``1 .. min_subset-1``
patients, or combines with two earlier ones to isolate so few
(:class:`~healthfed.privacy.differencing.CohortMemory`).

The admitted cohort is remembered at once (check and record in one transaction, so
concurrent requests cannot both slip past). After the filter
(:meth:`GuardedRequest.released`): the DP release's *actual* cost, as composed by the
DP disclosure filter, is committed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from healthfed.errors import PolicyDenied, PrivacyError
from healthfed.policy import SitePolicy
from healthfed.privacy.differencing import EVERYONE, CohortKey, CohortMemory, Released, cohort_of
from healthfed.privacy.disclosure import disclose
from healthfed.privacy.dp import DPRelease, disclose_dp
from healthfed.privacy.ledger import NO_PERMIT, Charge, PrivacyLedger
from healthfed.privacy.model_release import ModelStatistics, disclose_model_statistics
from healthfed.privacy.population import POPULATIONS_FILE, PopulationRegistry, bits_from_indices
from healthfed.privacy.secagg import SECURE_SUMMABLE, secure_weighting

log = logging.getLogger(__name__)

__all__ = [
    "GuardedRequest",
    "PrivacyGuard",
    "Ticket",
    "disclose_any",
    "planned_charge",
]

LEDGER_FILE = "privacy_ledger.sqlite"
COHORTS_FILE = "privacy_cohorts.sqlite"

# Computations whose release is a sum or a model update (secure aggregation applies).
SUMMED_RELEASES = frozenset(SECURE_SUMMABLE)


def planned_charge(params: Any) -> Charge | None:
    """The planned cost a computation's *validated* params declare, or None (not DP).

    DP computations put ``{"epsilon", "delta", "rho", "mechanism"}`` under
    ``params["dp"]["planned"]`` in their ``validate``.
    """
    if not isinstance(params, dict) or not isinstance(params.get("dp"), dict):
        return None
    planned = params["dp"].get("planned")
    if not isinstance(planned, dict):
        return None
    return Charge(
        float(planned["epsilon"]),
        float(planned["delta"]),
        float(planned["rho"]),
        str(planned.get("mechanism", "laplace")),
    )


def disclose_any(release: Any, policy: SitePolicy) -> dict[str, Any]:
    """The node's disclosure filter over every release type (fail closed on others)."""
    if isinstance(release, DPRelease):
        return disclose_dp(release, policy)
    if isinstance(release, ModelStatistics):
        return disclose_model_statistics(release, policy)
    return disclose(release, policy)


@dataclass
class Ticket:
    """What :meth:`PrivacyGuard.before_run` admitted; passed to the later steps."""

    dataset: str
    permit: str
    computation: str
    policy: SitePolicy
    charge: Charge | None
    charge_id: str | None
    cohort: CohortKey | None
    protected: bool
    population: str = ""
    checked: Released | None = None
    descriptor: Any = None
    done: bool = False
    audit_fields: dict[str, Any] = field(default_factory=dict)


class PrivacyGuard:
    """Budget ledger, differencing memory and DP/secure-aggregation requirements of a node.

    Parameters
    ----------
    state_dir
        The node's state folder (ledger and cohort memory live there and survive
        restarts); ``None`` keeps both in memory (ungoverned sandbox nodes only).
    policy
        The site's policy (a request may pass a stricter one).
    audit
        Appends a record to the node's audit log; needed for budget resets.
    """

    def __init__(
        self,
        state_dir: str | Path | None,
        policy: SitePolicy | None = None,
        audit: Callable[[dict[str, Any]], Any] | None = None,
    ) -> None:
        state = None if state_dir is None else Path(state_dir)
        self.state_dir = state
        self.policy = policy or SitePolicy()
        self.audit = audit
        self.ledger = PrivacyLedger(None if state is None else state / LEDGER_FILE)
        self.cohorts = CohortMemory(None if state is None else state / COHORTS_FILE)
        self.populations = PopulationRegistry(None if state is None else state / POPULATIONS_FILE)
        # dataset name -> (dataset object, data identity) its population was last resolved for
        self._resolved: dict[str, tuple[Any, Any]] = {}

    def close(self) -> None:
        self.ledger.close()
        self.cohorts.close()
        self.populations.close()

    # --- patient populations --------------------------------------------------------------
    def _rekey(self, old: str, new: str) -> None:
        """Populations ``old`` and ``new`` hold the same patients: one budget, one memory."""
        self.ledger.rekey(old, new)
        self.cohorts.rekey(old, new)

    def population(self, dataset: str, source: Any = None) -> str:
        """The patient population of ``dataset`` (see :mod:`healthfed.privacy.population`).

        ``source`` is the node's dataset object: when its data is new to the guard (or
        changed), its patient ids are read and the population resolved from them.
        """
        known = self.populations.population_of(dataset)
        if source is None or not callable(getattr(source, "connect", None)):
            return known or dataset
        identity_of = getattr(source, "data_identity", None)
        identity = identity_of() if callable(identity_of) else None
        cached = self._resolved.get(dataset)
        if known is not None and cached is not None and cached[0] is source:
            if cached[1] == identity:
                return known
        desc = source.descriptor
        from healthfed.data.dataset import leased_connection  # DuckDB: the node side only

        with leased_connection(source) as con:
            hashes, _ = self.populations.scan(con, desc.id_column, "TRUE")
        pop, _ = self.populations.resolve(dataset, hashes, _declared(desc), self._rekey)
        self._resolved[dataset] = (source, identity)
        return pop

    # --- the three steps -----------------------------------------------------------------
    def before_run(
        self,
        permit_id: str | None,
        dataset: str,
        computation: str,
        params: dict[str, Any],
        descriptor: Any = None,
        request_id: str | None = None,
        policy: SitePolicy | None = None,
        secure: bool = False,
        source: Any = None,
    ) -> Ticket:
        """Refuse or admit a validated request before any data is touched.

        ``source`` (the node's dataset object) lets the guard find the dataset's
        patient population; a DP request reads its patient ids for that (hashed at the
        node, nothing is released) the first time and whenever the data changed.

        Raises
        ------
        PolicyDenied
            The site requires DP or secure aggregation and the request lacks it.
        BudgetExceeded
            The planned ε exceeds a cap (per request, per permit on the population, or
            the population's lifetime cap).
        """
        policy = policy or self.policy
        permit = permit_id or NO_PERMIT
        charge = planned_charge(params)
        if policy.dp_required and charge is None:
            raise PolicyDenied(
                f"this site requires differential privacy (dp_required) and {computation!r} "
                "is not a DP release; use a dp_* computation or a 'dp' block"
            )
        if secure:
            secure_weighting(computation)
        if policy.secure_aggregation_required and computation in SUMMED_RELEASES and not secure:
            raise PolicyDenied(
                f"this site contributes {computation!r} only through secure aggregation "
                "(secure_aggregation_required); the request asks for it in the clear — "
                "run it with secure=True (Flower SecAgg+)"
            )
        charge_id = None
        if charge is not None:
            population = self.population(dataset, source)
            charge_id = self.ledger.reserve(
                population, permit, charge, policy, computation, request_id
            )
        else:
            population = self.populations.population_of(dataset) or dataset
        # Every exact (non-DP) release is an aggregate over its cohort: all are protected.
        protected = charge is None
        cohort = cohort_of(params, descriptor) if descriptor is not None else None
        return Ticket(
            dataset,
            permit,
            computation,
            policy,
            charge,
            charge_id,
            cohort,
            protected,
            population=population,
            descriptor=descriptor,
        )

    def check_cohort(self, con: Any, ticket: Ticket) -> None:
        """Differencing protection with the open connection (before the computation runs).

        Reads the keyed hashes of the request's effective rows (``data`` after
        opt-outs, the cohort's filter), registers new patients in the population and
        checks the patient set against the population's memory.
        """
        if not ticket.protected:
            return
        desc = ticket.descriptor
        if desc is None:
            raise PrivacyError(
                "differencing protection needs the dataset's descriptor; nothing released"
            )
        cohort = ticket.cohort or EVERYONE
        hashes, inside = self.populations.scan(con, desc.id_column, cohort.sql)
        pop, idx = self.populations.resolve(ticket.dataset, hashes, _declared(desc), self._rekey)
        ticket.population = pop
        bits = bits_from_indices(idx[inside])
        self.check_known(ticket, Released(bits, bits.bit_count(), cohort.definition))

    def check_known(self, ticket: Ticket, cohort: Released) -> None:
        """Admit an already counted patient set against the memory (no data read).

        Checked and remembered in one transaction (``CohortMemory.admit``).
        """
        if not ticket.protected:
            return
        self.cohorts.admit(
            ticket.population,
            cohort,
            ticket.policy.min_subset,
            ticket.dataset,
            ticket.permit,
            ticket.computation,
            ticket.policy.max_cohorts_per_population,
        )
        ticket.checked = cohort

    def after_release(self, ticket: Ticket, result: dict[str, Any]) -> dict[str, Any]:
        """Commit the release's actual cost; returns audit fields."""
        fields: dict[str, Any] = {}
        if ticket.charge_id is not None:
            actual = _actual_charge(result) or ticket.charge
            assert actual is not None
            planned = ticket.charge
            if planned is not None and actual.epsilon > planned.epsilon * (1 + 1e-6) + 1e-9:
                log.error(
                    "DP release cost ε=%.6g exceeds its plan ε=%.6g (%s)",
                    actual.epsilon,
                    planned.epsilon,
                    ticket.computation,
                )
            self.ledger.commit(ticket.charge_id, actual)
            spent = self.ledger.spent(ticket.population, ticket.permit, ticket.policy.dp_delta)
            lifetime = self.ledger.lifetime(ticket.population, ticket.policy.dp_delta)
            fields = {
                "dp_epsilon": round(actual.epsilon, 6),
                "dp_delta": actual.delta,
                "dp_epsilon_spent": round(spent.epsilon, 6),
                "dp_epsilon_budget": float(ticket.policy.dp_epsilon_per_permit),
                "dp_population": ticket.population,
                "dp_epsilon_lifetime": round(lifetime.epsilon, 6),
            }
        ticket.done = True
        ticket.audit_fields = fields
        return fields

    def abort(self, ticket: Ticket) -> None:
        """Nothing was released: cancel the reservation."""
        if ticket.charge_id is not None and not ticket.done:
            self.ledger.cancel(ticket.charge_id)
        ticket.done = True

    def request(
        self,
        permit_id: str | None,
        request_id: str | None,
        dataset: Any,
        computation: str,
        params: dict[str, Any],
        policy: SitePolicy | None = None,
        secure: bool = False,
    ) -> GuardedRequest:
        """Context manager around one request (``before_run`` on entry; abort on error).

        ``dataset`` is the node's dataset object (``.name``, ``.descriptor``) or its name.
        """
        name = getattr(dataset, "name", dataset)
        desc = getattr(dataset, "descriptor", None)
        source = dataset if not isinstance(dataset, str) else None
        return GuardedRequest(
            self,
            permit_id,
            request_id,
            str(name),
            desc,
            computation,
            params,
            policy,
            secure,
            source,
        )

    # --- the steward's views ------------------------------------------------------------
    def budget(self, policy: SitePolicy | None = None) -> Any:
        """pandas DataFrame of spent and remaining ε per patient population and permit."""
        return self.ledger.summary(policy or self.policy)

    def reset_budget(self, dataset: str, permit: str | None, actor: str, reason: str) -> int:
        """Start a new budget epoch of ``dataset``'s population under ``permit``.

        Only with an audit record (see ``PrivacyLedger.reset``); the population's
        lifetime total is never reset.
        """
        population = self.populations.population_of(dataset) or dataset
        return self.ledger.reset(population, permit, actor, reason, self.audit)

    def with_policy(self, policy: SitePolicy) -> PrivacyGuard:
        """The same guard (same ledger) applying ``policy``."""
        g = object.__new__(PrivacyGuard)
        g.__dict__.update(self.__dict__)
        g.policy = policy
        return g


class GuardedRequest:
    """One request inside the guard; see :meth:`PrivacyGuard.request`."""

    def __init__(
        self,
        guard: PrivacyGuard,
        permit_id: str | None,
        request_id: str | None,
        dataset: str,
        descriptor: Any,
        computation: str,
        params: dict[str, Any],
        policy: SitePolicy | None,
        secure: bool = False,
        source: Any = None,
    ) -> None:
        self.guard = guard
        self._args = (permit_id, dataset, computation, params, descriptor, request_id, policy)
        self._secure = secure
        self._source = source
        self.ticket: Ticket | None = None
        self.audit_fields: dict[str, Any] = {}

    def __enter__(self) -> GuardedRequest:
        self.ticket = self.guard.before_run(*self._args, secure=self._secure, source=self._source)
        return self

    def check_cohort(self, con: Any) -> None:
        assert self.ticket is not None
        self.guard.check_cohort(con, self.ticket)

    def check_known(self, cohort: Released) -> None:
        """Check a patient set counted by an earlier request on unchanged data."""
        assert self.ticket is not None
        self.guard.check_known(self.ticket, cohort)

    def released(self, result: dict[str, Any]) -> None:
        assert self.ticket is not None
        self.audit_fields = self.guard.after_release(self.ticket, result)

    def __exit__(self, exc_type: Any, *exc: object) -> None:
        if self.ticket is None:
            return
        if exc_type is not None or not self.ticket.done:
            self.guard.abort(self.ticket)


def _actual_charge(result: Any) -> Charge | None:
    p = result.get("privacy") if isinstance(result, dict) else None
    if not isinstance(p, dict):
        return None
    try:
        return Charge(
            float(p["epsilon"]), float(p["delta"]), float(p["rho"]), str(p.get("mechanism"))
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise PrivacyError("a DP release reported no valid privacy cost") from exc


def _declared(descriptor: Any) -> str | None:
    """The population a descriptor names (``[dataset] population = "..."``), if any."""
    extra = getattr(descriptor, "extra", None) or {}
    name = extra.get("population") if isinstance(extra, dict) else None
    return name if isinstance(name, str) and name else None
