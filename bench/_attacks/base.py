"""What every attack shares: the context it runs in, its result, and the registry."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from _attacks.world import World
from healthfed.errors import HealthfedError, PermitRefusedBySites, TooFewSites

__all__ = ["ATTACKS", "AttackResult", "Context", "Refused", "attack", "close_enough"]


class Refused(Exception):
    """A site, the hub or the federation refused a request: the attack stops, no leak."""


@dataclass
class AttackResult:
    """One attack on one engine: did it recover a protected value, and what stopped it."""

    name: str
    klass: str
    engine: str
    leak: bool
    detail: str
    refusal: str | None = None
    rounds: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "class": self.klass,
            "engine": self.engine,
            "leak": self.leak,
            "detail": self.detail,
            "refusal": self.refusal,
            "rounds": self.rounds,
            "seconds": round(self.seconds, 2),
        }


@dataclass
class Context:
    """An engine's federation (one deployment for all attacks) and its world."""

    engine: str
    fed: Any
    world: World
    rounds: int = field(default=0)

    def round(
        self, computation: str, dataset: str, params: dict[str, Any], permit: str = "main"
    ) -> dict[str, dict[str, Any]]:
        """One ordinary round under ``permit``; each site's released reply.

        Raises :class:`Refused` (with every site's reason) when the round released
        nothing: fewer sites than the permit's ``min_sites`` answered, the hub refused,
        or the request was rejected before it ran.
        """
        self.fed.with_permit(self.world.permits[permit])
        self.rounds += 1
        try:
            out = self.fed.round(computation, dataset, params)
        except (TooFewSites, PermitRefusedBySites) as exc:
            reasons = {**exc.refusals}
            text = "; ".join(f"{s}: {r}" for s, r in sorted(reasons.items())) or str(exc)
            raise Refused(text) from None
        except HealthfedError as exc:
            raise Refused(f"{type(exc).__name__}: {exc}") from None
        return out.replies


AttackFn = Callable[[Context], tuple[bool, str]]
ATTACKS: list[tuple[str, str, AttackFn]] = []


def attack(name: str, klass: str) -> Callable[[AttackFn], AttackFn]:
    """Register an attack: ``fn(ctx) -> (leak, what was recovered vs the truth)``."""

    def register(fn: AttackFn) -> AttackFn:
        ATTACKS.append((name, klass, fn))
        return fn

    return register


def run_attack(name: str, klass: str, fn: AttackFn, ctx: Context) -> AttackResult:
    """Run one attack; a refusal anywhere ends it without a leak (reason recorded)."""
    start, before = time.perf_counter(), ctx.rounds
    refusal = None
    try:
        leak, detail = fn(ctx)
    except Refused as exc:
        leak, detail, refusal = False, "refused", str(exc)
    except Exception as exc:  # noqa: BLE001 - an attack that breaks is reported, not fatal
        leak, detail, refusal = False, f"attack failed: {type(exc).__name__}: {exc}", None
    return AttackResult(
        name,
        klass,
        ctx.engine,
        leak,
        detail,
        refusal,
        ctx.rounds - before,
        time.perf_counter() - start,
    )


def close_enough(estimate: float | None, truth: float, tol: float) -> bool:
    """``estimate`` within ``tol`` of ``truth`` (a missing estimate never is)."""
    if estimate is None:
        return False
    return abs(float(estimate) - float(truth)) <= tol
