"""The cell key method: the same cohort always gets the same noisy count.

Why: a released count that is exact can be differenced against any other
release (a Table 1 group against a ``sum`` with one more filter, crosstab cells
against ``count``s, a linear program over a few dozen tables). Fresh random
noise per request does not help either -- the researcher repeats the request and
averages. The cell key method (Eurostat's recommendation for the 2021 census
tables, the ABS TableBuilder) makes the noise a function of *which patients* are
in a cell:

* every patient gets a secret **record key**, an integer in ``[0, 2^32)``: the
  first 32 bits of ``sha256(secret ":" patient_id)`` with a per-node 256-bit secret
  (``<state_dir>/cell_key.secret``, mode 0600). The key depends on the patient,
  not on the permit or the dataset name, so one population has one set of keys;
* a cell's **cell key** is the sum of its records' keys modulo ``2^32`` (the
  fractional part of the sum of uniform keys in ``[0, 1)``), computed by DuckDB
  in the same scan as the count;
* the released count is ``n + d`` where ``d`` is read from a published
  **perturbation table** (ptable) at row ``n`` and position ``cell key / 2^32``.

The ptable is generated from documented parameters (:func:`build_ptable`): the
noise is at most ``D`` in absolute value, has mean 0 (unbiased) and variance
``V`` where the support allows it, and never produces a negative count or one in
``1 .. js`` (``js = min_cell_count - 1``), so perturbed counts need no
suppression. The transition probabilities of each row are the maximum-entropy
distribution under those constraints (Giessing 2016, as in the ``ptable`` R
package). Zeros stay zeros (an empty cell has no records and no key).

Magnitudes (a cell's mean and sum of squares) are perturbed with the same cell
key: ``sum' = sum + m * max|x| * e`` and ``M2' = M2 + m * max(x - mean)^2 * e'``,
where ``e, e'`` have ``|e| in [1/2, 1]`` with a random sign, drawn from
``sha256(cell key ":" statistic)``, and ``m`` is the site's
``cell_key_magnitude_share``. Differencing two cells that differ by one patient
then recovers that patient's value only up to at least ``m/2`` times the cell's
largest value.

Residual risk: noise of distinct patient sets is independent, so averaging ``k``
different sets whose counts add up to the same target cell shrinks the noise by
``sqrt(k)``; pinning a count to +-0.5 at 95 % needs ``V * (1.96 / 0.5)^2`` (31 at
``V = 2``). The perturbed computations take no researcher-chosen filter, so such
sets come only from the other cells and margins of the tables (the bench's least
squares over all of them is worth 1.7 views) and from data that changes, which the
node-wide cohort memory counts; filtered cohorts are exact releases under its audit.
"""

from __future__ import annotations

import hashlib
import math
import os
import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from healthfed.errors import PrivacyError
from healthfed.policy import SitePolicy
from healthfed.privacy.release import CountTable

__all__ = [
    "KEY_MOD",
    "SECRET_FILE",
    "CellKeys",
    "PTable",
    "RecordKeys",
    "active_record_keys",
    "build_ptable",
    "cell_keys",
    "effective_max_deviation",
    "magnitude_noise",
    "node_record_keys",
    "ptable_for",
    "ptable_parameters",
    "using_record_keys",
]

KEY_BITS = 32
KEY_MOD = 1 << KEY_BITS
SECRET_FILE = "cell_key.secret"


# --------------------------------------------------------------------------------------
# record keys: a secret per node, a key per patient
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RecordKeys:
    """The node's record-key secret; :meth:`sql` computes a patient's key in DuckDB."""

    secret: str  # hex only: it is embedded in SQL as a literal

    def __post_init__(self) -> None:
        if not self.secret or any(c not in "0123456789abcdef" for c in self.secret):
            raise PrivacyError("the record-key secret must be lower-case hex")

    def sql(self, id_sql: str) -> str:
        """DuckDB BIGINT in ``[0, 2^32)``: the record key of the patient id ``id_sql``."""
        digest = f"sha256('{self.secret}:' || CAST({id_sql} AS VARCHAR))"
        return f"CAST(('0x' || substr({digest}, 1, {KEY_BITS // 4})) AS BIGINT)"

    def key(self, patient_id: Any) -> int:
        """The same key computed in Python (tests, audits)."""
        digest = hashlib.sha256(f"{self.secret}:{patient_id}".encode()).hexdigest()
        return int(digest[: KEY_BITS // 4], 16)


_EPHEMERAL = RecordKeys(secrets.token_hex(32))
_BY_DIR: dict[str, RecordKeys] = {}
_ACTIVE: ContextVar[RecordKeys | None] = ContextVar("healthfed_record_keys", default=None)


def node_record_keys(state_dir: str | Path | None) -> RecordKeys:
    """The record keys of a node: from ``<state_dir>/cell_key.secret`` (created once).

    A node without a state folder (a sandbox) uses a secret of this process, so
    its noisy counts stay consistent while it runs.
    """
    if state_dir is None:
        return _EPHEMERAL
    path = Path(state_dir) / SECRET_FILE
    cached = _BY_DIR.get(str(path))
    if cached is not None:
        return cached
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process created it first; read theirs
        else:
            with os.fdopen(fd, "w", encoding="ascii") as fh:
                fh.write(secrets.token_hex(32))
    keys = RecordKeys(path.read_text(encoding="ascii").strip())
    _BY_DIR[str(path)] = keys
    return keys


@contextmanager
def using_record_keys(keys: RecordKeys) -> Iterator[RecordKeys]:
    """Make ``keys`` the record keys of the computations run inside (the node sets it)."""
    token = _ACTIVE.set(keys)
    try:
        yield keys
    finally:
        _ACTIVE.reset(token)


def active_record_keys() -> RecordKeys:
    """The record keys of the current request (the process's own when none was set)."""
    return _ACTIVE.get() or _EPHEMERAL


# --------------------------------------------------------------------------------------
# the perturbation table
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PTable:
    """A published perturbation table for counts.

    ``offsets[i]`` and ``upper[i]`` describe row ``i`` (true count ``i``): the
    cell key ``u = key / 2^32`` selects offset ``offsets[i][k]`` for the first ``k``
    with ``u < upper[i][k]`` (cumulative probabilities). Counts above the last row
    use the last row, which is unconstrained by the bounds and so the same for all.
    """

    max_deviation: int
    variance: float
    js: int
    offsets: tuple[tuple[int, ...], ...]
    probabilities: tuple[tuple[float, ...], ...]
    upper: tuple[tuple[float, ...], ...]

    def row(self, value: int) -> int:
        return min(int(value), len(self.offsets) - 1)

    def perturb(self, value: int, key: int) -> int:
        """The released count of a cell with true count ``value`` and cell key ``key``."""
        value = int(value)
        if value <= 0:
            return 0
        r = self.row(value)
        k = int(np.searchsorted(np.asarray(self.upper[r]), (int(key) % KEY_MOD) / KEY_MOD, "right"))
        return value + self.offsets[r][min(k, len(self.offsets[r]) - 1)]

    def to_dict(self) -> dict[str, Any]:
        """The table as published in the transparency register."""
        return {
            "method": "cell_key",
            "max_deviation": self.max_deviation,
            "variance": self.variance,
            "js": self.js,
            "key_bits": KEY_BITS,
            "rows": [
                {"count": i, "offsets": list(o), "probabilities": [round(p, 10) for p in pr]}
                for i, (o, pr) in enumerate(zip(self.offsets, self.probabilities, strict=True))
            ],
        }


def _max_entropy(d: np.ndarray, v: float) -> np.ndarray:
    """Probabilities on offsets ``d`` with mean 0, variance ``v`` and maximum entropy.

    The solution is ``p ~ exp(a d + b d^2)``; ``(a, b)`` minimise the convex dual
    ``log sum exp(a d + b d^2) - b v`` (damped Newton).
    """
    d = d.astype(float)
    lam = np.zeros(2)
    feats = np.vstack([d, d * d])
    target = np.array([0.0, v])

    def probs(x: np.ndarray) -> np.ndarray:
        z = x @ feats
        w = np.exp(z - z.max())
        return w / w.sum()

    def dual(x: np.ndarray) -> float:
        z = x @ feats
        return float(z.max() + np.log(np.exp(z - z.max()).sum()) - x @ target)

    for _ in range(200):
        p = probs(lam)
        grad = feats @ p - target
        if np.max(np.abs(grad)) < 1e-12:
            break
        cov = (feats * p) @ feats.T - np.outer(feats @ p, feats @ p)
        step = np.linalg.solve(cov + 1e-12 * np.eye(2), grad)
        t, f0 = 1.0, dual(lam)
        while t > 1e-10 and dual(lam - t * step) > f0 - 1e-4 * t * float(grad @ step):
            t /= 2
        lam = lam - t * step
    return probs(lam)


def _row(i: int, D: int, V: float, js: int) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """Offsets and probabilities of true count ``i`` (see :func:`build_ptable`)."""
    targets = [j for j in range(max(0, i - D), i + D + 1) if j == 0 or j > js]
    d = np.array([j - i for j in targets])
    if i == 0 or d.min() >= 0 or d.max() <= 0:
        return (0,) if 0 in d else (int(d[0]),), (1.0,)
    neg, pos = d[d < 0].max(), d[d > 0].min()
    v_min = 0.0 if 0 in d else float(-neg * pos)
    v_max = float(-d.min() * d.max())
    slack = 0.05 * (v_max - v_min)  # keep off the degenerate two- or three-point solutions
    v = min(max(float(V), v_min + (slack if v_min > 0 else 0.0)), v_max - slack)
    p = _max_entropy(d, v)
    keep = p > 1e-12
    p = p[keep] / p[keep].sum()
    return tuple(int(x) for x in d[keep]), tuple(float(x) for x in p)


@lru_cache(maxsize=32)
def build_ptable(max_deviation: int, variance: float, js: int) -> PTable:
    """Generate the count ptable for maximum deviation ``D``, variance ``V`` and ``js``.

    Row ``i`` (``0 <= i <= js + 1 + D``) gives probabilities to the counts
    ``j`` with ``|j - i| <= D``, ``j >= 0`` and ``j`` not in ``1 .. js``, with mean
    ``i`` and variance ``V`` -- or, where the allowed counts force it (small ``i``),
    the variance nearest ``V`` that they allow. Rows beyond ``js + 1 + D`` equal the
    last one shifted, so the table stops there.
    """
    D, js = int(max_deviation), int(js)
    if D < 1 or js < 0 or D < js:
        raise PrivacyError(
            f"cell key ptable: need max_deviation >= max(1, js); got D = {D}, js = {js}"
        )
    if not float(variance) > 0:
        raise PrivacyError("cell key ptable: variance must be > 0")
    offsets, probs, upper = [], [], []
    for i in range(js + D + 2):
        o, p = _row(i, D, float(variance), js)
        cum = np.cumsum(p)
        cum[-1] = 1.0
        offsets.append(o)
        probs.append(p)
        upper.append(tuple(float(c) for c in cum))
    return PTable(D, float(variance), js, tuple(offsets), tuple(probs), tuple(upper))


def ptable_for(policy: SitePolicy) -> PTable | None:
    """The site's count ptable, or ``None`` when the site releases exact counts."""
    if policy.count_perturbation != "cell_key":
        return None
    return build_ptable(
        effective_max_deviation(policy), float(policy.cell_key_variance), policy.min_cell_count - 1
    )


def effective_max_deviation(policy: SitePolicy) -> int:
    """``D``, raised to ``min_cell_count`` where that is larger.

    A count of ``min_cell_count`` must be able to move to 0, and one of 1 up to
    ``min_cell_count``, for the noise to be unbiased; a permit that raises
    ``min_cell_count`` thus widens the small counts' noise. Large counts keep the
    variance ``V`` whatever ``D`` is.
    """
    return max(int(policy.cell_key_max_deviation), int(policy.min_cell_count))


def ptable_parameters(policy: SitePolicy) -> dict[str, Any]:
    """The perturbation parameters a site publishes (transparency register)."""
    if policy.count_perturbation != "cell_key":
        return {"method": "none"}
    return {
        "method": "cell_key",
        "max_deviation": effective_max_deviation(policy),
        "variance": float(policy.cell_key_variance),
        "js": int(policy.min_cell_count - 1),
        "magnitude_share": float(policy.cell_key_magnitude_share),
        "key_bits": KEY_BITS,
    }


# --------------------------------------------------------------------------------------
# applying it to a release's constraint system
# --------------------------------------------------------------------------------------
@dataclass
class CellKeys:
    """The cell key of every released count (``None``: the table carries no keys)."""

    keys: list[int | None]
    values: list[int]  # released (perturbed) values
    perturbed: int  # how many released cells went through the ptable


def _table_keys(t: CountTable) -> dict[str, Any]:
    k = np.asarray(t.keys, dtype=object) % KEY_MOD
    return {
        "cell": k,
        "row": [int(sum(k[i, :])) % KEY_MOD for i in range(k.shape[0])],
        "col": [int(sum(k[:, j])) % KEY_MOD for j in range(k.shape[1])],
        "grand": int(sum(k.ravel())) % KEY_MOD,
    }


def _assign(keys: list[int | None], var: int, key: int) -> None:
    if keys[var] is not None and keys[var] != key:
        raise PrivacyError("a linked margin's cell key differs from its table's: nothing released")
    keys[var] = key


def cell_keys(sys: Any, tables: Mapping[str, CountTable], ptable: PTable | None) -> CellKeys:
    """Cell keys of every variable of ``sys`` (margins: sums of their cells' keys) and values.

    Without a ptable, or for tables that carry no keys, values are the true counts.
    """
    keys: list[int | None] = [None] * len(sys.values)
    if ptable is not None:
        for name, t in tables.items():
            if t.keys is None:
                continue
            tk = _table_keys(t)
            R, C = t.counts.shape
            for i in range(R):
                for j in range(C):
                    _assign(keys, int(sys.cell[name][i, j]), int(tk["cell"][i, j]))
            for i, var in enumerate(sys.row_total[name]):
                _assign(keys, var, tk["row"][i] if len(sys.row_total[name]) == R else tk["grand"])
            for j, var in enumerate(sys.col_total[name]):
                _assign(keys, var, tk["col"][j] if len(sys.col_total[name]) == C else tk["grand"])
            _assign(keys, sys.grand[name], tk["grand"])
    values = [
        int(v) if k is None or ptable is None else ptable.perturb(int(v), k)
        for v, k in zip(sys.values, keys, strict=True)
    ]
    perturbed = sum(1 for k, v in zip(keys, sys.values, strict=True) if k is not None and v > 0)
    return CellKeys(keys, values, perturbed)


def _draw(key: int, statistic: str) -> float:
    """A value with ``|e|`` in ``[1/2, 1]`` and a random sign, fixed by the cell key."""
    h = int(hashlib.sha256(f"{int(key)}:{statistic}".encode()).hexdigest()[:13], 16)
    u = h / float(1 << 52)
    return math.copysign(0.5 + abs(2.0 * u - 1.0) / 2.0, u - 0.5)


def magnitude_noise(key: int, statistic: str, scale: float, share: float) -> float:
    """The cell-key noise of a magnitude: ``share * scale * e`` (see the module docstring)."""
    return float(share) * float(scale) * _draw(key, statistic)
