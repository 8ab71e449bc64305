"""Class 4, budget: fresh differential-privacy budgets on the same patients.

The sites allow ``EPSILON_CAP`` per request, per permit and (where the code has such a
field) per dataset over its lifetime. A DP count released under a second permit, or on
the same file registered under a second dataset name, spends more than that on the same
patients: averaging the answers then narrows the noise by the square root of their
number. The attack counts the ε each site actually released on ``hospital_1``'s COVID
patients (``covid`` and ``covid_copy``) and leaks when the total passes the cap.
"""

from __future__ import annotations

from _attacks.base import Context, Refused, attack
from _attacks.world import EPSILON_CAP

SITE = "hospital_1"


def _dp_count(ctx: Context, dataset: str, permit: str, notes: list[str]) -> float:
    """One DP count of ε = cap; the ε ``hospital_1`` released (0 when refused)."""
    try:
        reply = ctx.round("dp_count", dataset, {"epsilon": EPSILON_CAP}, permit=permit)[SITE]
    except Refused as exc:  # refused: nothing spent, nothing released
        notes.append(f"{dataset} under '{permit}' refused: {exc}")
        return 0.0
    eps = float((reply.get("privacy") or {}).get("epsilon", EPSILON_CAP))
    ctx.world.spent[SITE] = ctx.world.spent.get(SITE, 0.0) + eps
    notes.append(f"{dataset} under '{permit}': ε {eps:g} released")
    return eps


def _verdict(ctx: Context, released: list[float], notes: list[str]) -> tuple[bool, str]:
    total = ctx.world.spent.get(SITE, 0.0)
    leak = total > EPSILON_CAP + 1e-9 and any(e > 0 for e in released)
    return leak, f"ε on the population {total:g} (cap {EPSILON_CAP:g}); " + "; ".join(notes)


@attack("budget: a second permit on the same patients", "4 budget")
def second_permit(ctx: Context) -> tuple[bool, str]:
    notes: list[str] = []
    released = [
        _dp_count(ctx, "covid", "main", notes),
        _dp_count(ctx, "covid", "second", notes),
    ]
    return _verdict(ctx, released, notes)


@attack("budget: the same file registered as two datasets", "4 budget")
def same_file(ctx: Context) -> tuple[bool, str]:
    notes: list[str] = []
    if ctx.world.spent.get(SITE, 0.0) == 0.0:  # run alone: spend the cap on 'covid' first
        _dp_count(ctx, "covid", "third", notes)
    released = [_dp_count(ctx, "covid_copy", "third", notes)]
    return _verdict(ctx, released, notes)
