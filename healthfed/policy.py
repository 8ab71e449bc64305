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
        Cap on the ε spent on one dataset over all permits; ``0`` (default) sets no
        dataset-wide cap (the per-permit cap still holds).
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
    dp_epsilon_per_dataset: float = 0.0
    dp_delta: float = 1e-6
    dp_required: bool = False
    dominance_n: int = 2
    dominance_k: float = 85.0
    secure_aggregation_required: bool = False

    def __post_init__(self) -> None:
        for name in (
            "min_cell_count",
            "min_subset",
            "max_levels",
            "min_sites",
            "histogram_bins",
            "dominance_n",
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
        for name in ("dp_required", "secure_aggregation_required", "allow_min_max"):
            if not isinstance(getattr(self, name), bool):
                raise PolicyError(f"policy field {name!r} must be true or false")

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
