"""Helpers shared by the benchmark scripts: byte counting, timing, tables."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

__all__ = ["ByteCounter", "Stopwatch", "table"]


class ByteCounter:
    """Wraps a ``Federation`` transport and counts JSON bytes per round.

    A round's size is the request's JSON once per site (every site receives it)
    plus every site's JSON reply, as they travel inside Flower messages.
    """

    def __init__(self, transport: Callable[[dict[str, Any], float], dict[str, Any]]) -> None:
        self._transport = transport
        self.rounds: list[dict[str, Any]] = []

    def __call__(self, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        raw = self._transport(request, timeout)
        envelope = {k: v for k, v in request.items() if k not in ("expected_sites", "timeout")}
        replies = raw.get("replies", {})
        req = len(json.dumps(envelope, allow_nan=False).encode())
        rep = sum(len(json.dumps(r, allow_nan=False).encode()) for r in replies.values())
        self.rounds.append(
            {
                "computation": request.get("computation"),
                "bytes": req * max(len(replies), 1) + rep,
                "request_bytes": req,
                "reply_bytes": rep,
            }
        )
        return raw


class Stopwatch:
    """Accumulates wall time over ``with`` blocks (pauses between them)."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def __enter__(self) -> Stopwatch:
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds += time.perf_counter() - self._t0


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """A plain fixed-width table (first column left-aligned, the rest right-aligned)."""

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}" if abs(v) < 1e5 else f"{v:,.0f}"
        if isinstance(v, int):
            return f"{v:,}"
        return str(v)

    cells = [[fmt(v) for v in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    out = [
        "  ".join(
            h.ljust(w) if i == 0 else h.rjust(w)
            for i, (h, w) in enumerate(zip(headers, widths, strict=True))
        )
    ]
    out.append("-" * len(out[0]))
    for r in cells:
        out.append(
            "  ".join(
                v.ljust(w) if i == 0 else v.rjust(w)
                for i, (v, w) in enumerate(zip(r, widths, strict=True))
            )
        )
    return "\n".join(out)
