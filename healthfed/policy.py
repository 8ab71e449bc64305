"""Site policy: the disclosure rules a hospital sets for its own node.

Defaults follow ``conventions.md`` and are at least as strict as DataSHIELD's
(``nfilter.tab`` 3 -> we use 5). Only the site changes them, in one TOML file::

    [policy]
    min_cell_count = 5
    allow_min_max = false
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from healthfed.errors import PolicyError


@dataclass(frozen=True)
class SitePolicy:
    """Disclosure-control settings of one node.

    Parameters
    ----------
    min_cell_count
        Smallest non-zero count a node releases (primary suppression below it).
    min_subset
        Smallest number of patients a statistic (mean, SD, quantile bin) may describe.
    max_levels
        Largest number of levels a categorical variable may have in a request.
    max_param_ratio
        Largest ratio of model parameters to rows a node accepts.
    min_sites
        Fewest contributing sites for a pooled release at the hub; in a secure
        (SecAgg+) round the site itself takes no part with fewer.
    allow_min_max
        Whether exact minima/maxima may be released (off: they are single patients' values).
    histogram_bins
        Number of equal-width grid bins over a variable's declared bounds, before
        bins are merged up to ``min_subset`` patients each.
    dp_epsilon_per_request, dp_epsilon_per_permit
        Differential-privacy budget caps used when DP is requested: the ε of one
        release, and the ε spent under one permit on one dataset (composed as in
        :mod:`healthfed.privacy.ledger`).
    dp_epsilon_per_dataset
        Lifetime cap on the ε spent on one **patient population** (every dataset name
        of the same patients, see :mod:`healthfed.privacy.population`) over all
        permits and budget epochs. Default ``10``: two full per-permit budgets, the
        upper end of the ε usually called meaningful; without it a second permit
        would get a fresh budget on the same patients. ``0`` sets no lifetime cap.
    dp_delta
        The δ at which (ε, δ) is reported for Gaussian/zCDP releases and at which
        the ledger converts composed zCDP into ε; at most ``1e-5``.
    dp_required
        When true every release must be differentially private: non-DP statistics
        are refused and ``local_train`` must carry a ``dp`` block.
    dominance_n, dominance_k
        The (n, k) dominance rule for released sums: no sum where the ``n`` largest
        contributions make up more than ``k`` percent of the total (default: the two
        largest more than 85 %).
    secure_aggregation_required
        When true the site contributes sums and model updates (``sum``,
        ``feature_moments``, ``glm_step``, ``local_train``) only inside Flower
        SecAgg+ rounds (``healthfed.federation.secure_client``), never in the clear.
    eta_bound
        The bounded region in which a node evaluates a model a researcher chose (GLM
        and Cox coefficients, FedAvg weights, evaluated models): every pre-activation
        on the site's rows -- linear predictor, hidden-unit input, output logit --
        within ``[-eta_bound, eta_bound]``; a spread ``<= eta_bound`` for Poisson and
        Cox (default 30). A larger bound lets very confident models run at the cost of
        weaker protection against models that act as an indicator of one value (see
        ``healthfed.privacy.bounded_region``).
    exact_nonlinear_models
        When false (default) a node trains a nonlinear model (the MLP) only with
        differential privacy (``local_train`` must carry a ``dp`` block) and does not
        evaluate one (``evaluate_binary``, ``subgroup_metrics``, permutation
        importance). Two tanh layers whose every pre-activation is within
        ``eta_bound`` still compose into a step about a year wide at a chosen value, and
        two requests at neighbouring steps isolate a patient whose value is a few years
        from everyone else's (``bench/privacy_attacks.py``); only noise protects
        against that. True accepts that residual risk for exact MLP updates and
        evaluations.
    time_grid_unit
        The public time grid of survival releases (``km_counts``, ``cox_risk_sets``), in
        the duration's unit (default 30, i.e. days -> months): grid points are multiples
        of it starting at 0, never offsets a researcher chooses, so releases on shifted
        grids cannot be differenced down to single deaths on named days. ``0`` sets no
        public grid (any grid); only a site with ``min_cell_count = 1`` may use it.
    count_perturbation
        ``"cell_key"`` (default): the counts of the statistical computations
        (``table1``, ``describe``, ``crosstab``, ``count``), and the means and sums of
        squares released with them, are perturbed with the cell key method
        (:mod:`healthfed.privacy.cellkey`), so the same cohort always gets the same
        answer and differencing or averaging repeats gains nothing. ``"none"``:
        exact counts (with suppression) -- released only where the site says so here.
    cell_key_max_deviation, cell_key_variance
        The perturbation table's parameters: largest absolute noise ``D`` (raised to
        ``min_cell_count`` where that is larger -- e.g. under a permit's stricter output
        rules -- so a small count can move to 0 or to ``min_cell_count`` without bias)
        and noise variance ``V`` (that of every count above ``min_cell_count + D``). Perturbed counts are
        never negative and never in ``1 .. min_cell_count - 1``. Both are published in
        the transparency register.
    cell_key_magnitude_share
        ``m`` of the magnitude noise: a cell's sum moves by ``m * max|x| * e`` and its
        sum of squares by ``m * max (x - mean)^2 * e'`` with ``|e|, |e'|`` in
        ``[1/2, 1]`` (0: means and SDs exact, counts still perturbed).
    max_request_list, max_request_numbers, max_request_depth, max_request_bytes
        Limits on one request's parameters, checked at the node before the computation
        sees them (:mod:`healthfed.node.limits`), the same for every computation: the
        longest list of names or objects (columns, variables, groupings, spec entries;
        default 500), the numbers in all (weights, coefficients, grids, candidates;
        default 1,000,000), the nesting depth (default 16) and the size as JSON text
        (default 32 MB). Without them one request (e.g. ``feature_moments`` over 5,000
        copies of a column) took minutes and tens of GB at every site.
    max_hidden_units, max_candidates, max_train_row_epochs
        Work limits the generic checks cannot see: hidden units of a network
        (``hidden``, ``model.hidden``; default 512), recalibration candidates one
        evaluation scores (default 1,000), and the dataset's rows times ``epochs`` of
        one ``local_train`` (default 10,000,000).
    max_request_seconds
        Wall time one request may take at the node (default 120 s, the hub's default
        wait): DuckDB queries are interrupted and numpy loops stop at the deadline,
        and the request is refused naming this field.
    max_cohorts_per_population
        Most distinct patient sets (cohorts) the node releases exact aggregates over
        for one patient population in its lifetime, over every permit and dataset
        name (default 1,000; repeats of a cohort are free). Every new cohort is
        audited against all earlier ones (no combination may give the count of a few
        patients, :mod:`healthfed.privacy.span_audit`), so this bounds that audit's
        work; a cohort over the cap is refused naming this field.
    timeout_s
        Not a disclosure rule: how long the hub waits for this node by default.
    """

    min_cell_count: int = 5
    min_subset: int = 5
    max_levels: int = 40
    max_param_ratio: float = 0.33
    min_sites: int = 2
    allow_min_max: bool = False
    histogram_bins: int = 200
    dp_epsilon_per_request: float = 1.0
    dp_epsilon_per_permit: float = 5.0
    dp_epsilon_per_dataset: float = 10.0
    dp_delta: float = 1e-6
    dp_required: bool = False
    dominance_n: int = 2
    dominance_k: float = 85.0
    secure_aggregation_required: bool = False
    max_request_list: int = 500
    max_request_numbers: int = 1_000_000
    max_request_depth: int = 16
    max_request_bytes: int = 32_000_000
    max_hidden_units: int = 512
    max_candidates: int = 1000
    max_train_row_epochs: int = 10_000_000
    max_request_seconds: float = 120.0
    max_cohorts_per_population: int = 1000
    eta_bound: float = 30.0
    exact_nonlinear_models: bool = False
    time_grid_unit: float = 30.0
    count_perturbation: str = "cell_key"
    cell_key_max_deviation: int = 5
    cell_key_variance: float = 2.0
    cell_key_magnitude_share: float = 0.5

    def __post_init__(self) -> None:
        self._check_request_limits()
        for name in (
            "min_cell_count",
            "min_subset",
            "max_levels",
            "min_sites",
            "histogram_bins",
            "dominance_n",
            "cell_key_max_deviation",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise PolicyError(
                    f"policy field {name!r} must be a positive integer, got {value!r}"
                )
        if not 0 < float(self.max_param_ratio) <= 1:
            raise PolicyError(
                f"policy field 'max_param_ratio' must be in (0, 1], got {self.max_param_ratio!r}"
            )
        for name in ("dp_epsilon_per_request", "dp_epsilon_per_permit"):
            if float(getattr(self, name)) <= 0:
                raise PolicyError(f"policy field {name!r} must be > 0")
        if float(self.dp_epsilon_per_request) > float(self.dp_epsilon_per_permit):
            raise PolicyError(
                "policy field 'dp_epsilon_per_request' must not exceed 'dp_epsilon_per_permit'"
            )
        if float(self.dp_epsilon_per_dataset) < 0:
            raise PolicyError("policy field 'dp_epsilon_per_dataset' must be >= 0 (0: no cap)")
        if not 0 < float(self.dp_delta) <= 1e-5:
            raise PolicyError(
                f"policy field 'dp_delta' must be in (0, 1e-5], got {self.dp_delta!r}"
            )
        if not 0 < float(self.dominance_k) <= 100:
            raise PolicyError(
                f"policy field 'dominance_k' must be a percentage in (0, 100], got "
                f"{self.dominance_k!r}"
            )
        bound = self.eta_bound
        if isinstance(bound, bool) or not isinstance(bound, int | float) or not 0 < bound < 700:
            raise PolicyError(
                f"policy field 'eta_bound' must be a number in (0, 700), got {bound!r}"
            )
        unit = self.time_grid_unit
        if isinstance(unit, bool) or not isinstance(unit, int | float) or not 0 <= unit < 1e300:
            raise PolicyError(
                f"policy field 'time_grid_unit' must be a number >= 0 (0: no public grid), "
                f"got {unit!r}"
            )
        self._check_cell_key()
        for name in (
            "dp_required",
            "secure_aggregation_required",
            "allow_min_max",
            "exact_nonlinear_models",
        ):
            if not isinstance(getattr(self, name), bool):
                raise PolicyError(f"policy field {name!r} must be true or false")

    def _check_cell_key(self) -> None:
        if self.count_perturbation not in ("cell_key", "none"):
            raise PolicyError(
                f"policy field 'count_perturbation' must be 'cell_key' or 'none', got "
                f"{self.count_perturbation!r}"
            )
        if not float(self.cell_key_variance) > 0:
            raise PolicyError("policy field 'cell_key_variance' must be > 0")
        if not 0 <= float(self.cell_key_magnitude_share) <= 10:
            raise PolicyError("policy field 'cell_key_magnitude_share' must be in [0, 10]")

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<policy>") -> SitePolicy:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise PolicyError(
                f"{source}: unknown policy field(s) {unknown}; known: {sorted(known)}"
            )
        try:
            return cls(**data)
        except TypeError as exc:  # pragma: no cover - defensive
            raise PolicyError(f"{source}: {exc}") from exc
        except PolicyError as exc:
            raise PolicyError(f"{source}: {exc}") from exc

    @classmethod
    def from_toml(cls, path: str | Path) -> SitePolicy:
        """Read the ``[policy]`` table of a TOML file (missing fields keep their defaults)."""
        path = Path(path)
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise PolicyError(f"policy file not found: {path}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise PolicyError(f"{path}: not valid TOML: {exc}") from exc
        table = raw.get("policy", raw)
        if not isinstance(table, dict):
            raise PolicyError(f"{path}: [policy] must be a table")
        return cls.from_dict(table, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def _check_request_limits(self) -> None:
        """The per-request work limits: positive integers, a positive finite wall time."""
        for name in (
            "max_request_list",
            "max_request_numbers",
            "max_request_depth",
            "max_request_bytes",
            "max_hidden_units",
            "max_candidates",
            "max_train_row_epochs",
            "max_cohorts_per_population",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise PolicyError(
                    f"policy field {name!r} must be a positive integer, got {value!r}"
                )
        if self.max_request_depth > 100:
            raise PolicyError("policy field 'max_request_depth' must be at most 100")
        seconds = self.max_request_seconds
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise PolicyError(
                f"policy field 'max_request_seconds' must be a number, got {seconds!r}"
            )
        if not 0 < float(seconds) < float("inf"):
            raise PolicyError(
                f"policy field 'max_request_seconds' must be > 0 and finite, got {seconds!r}"
            )
