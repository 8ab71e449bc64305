"""Benchmark: the node's population registry as its patients accumulate.

Every request registers the patients the node has not seen yet
(:class:`healthfed.privacy.digest_index.DigestIndex`, the in-memory index behind
:mod:`healthfed.privacy.population`). For an index of ``--sizes`` digests it times
appending ``--new`` new digests and looking up a request of ``--new`` rows, each
against the baseline of sorting every digest afresh (what ``append`` did before
it merged) in the same run: ratio = operation / fresh sort; and a dataset's first
request of ``size`` patients through ``PopulationRegistry.resolve``.

Random 128-bit digests; median of ``--repeats``. Prints a table; with ``--json`` the
last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import table  # noqa: E402

from healthfed.privacy.digest_index import DigestIndex  # noqa: E402
from healthfed.privacy.population import PopulationRegistry  # noqa: E402


def _digests(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 2**63, size=(n, 2), dtype=np.int64).astype(np.uint64)


def _median_s(fn: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def measure(size: int, new: int, repeats: int, seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    index = DigestIndex()
    t = time.perf_counter()
    index.append(_digests(rng, size))
    first = time.perf_counter() - t
    batches = [_digests(rng, new) for _ in range(repeats)]
    appends = []
    for batch in batches:  # the index grows by ``new`` each time, as a node's does
        t = time.perf_counter()
        index.append(batch)
        appends.append(time.perf_counter() - t)
    stored = index.digests()
    resort = _median_s(lambda: np.argsort(stored[:, 0], kind="stable"), repeats)
    asked = np.concatenate([stored[rng.integers(0, len(stored), new // 2)], _digests(rng, new)])
    lookup = _median_s(lambda: index.lookup(asked), repeats)
    # A dataset's first request through the registry (in memory, as a sandbox node's):
    # lookup, distinct digests, one batch row, append.
    registry = PopulationRegistry(None)
    t = time.perf_counter()
    registry.resolve("dataset", stored[:size])
    resolve_first = time.perf_counter() - t
    registry.close()
    append = float(np.median(appends))
    return {
        "size": size,
        "new": new,
        "first_registration_s": first,
        "registry_first_request_s": resolve_first,
        "append_s": append,
        "lookup_s": lookup,
        "fresh_sort_s": resort,
        "append_ratio": append / resort,
        "lookup_ratio": lookup / resort,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[250_000, 2_000_000])
    ap.add_argument("--new", type=int, default=1_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    rows = [measure(n, args.new, args.repeats) for n in args.sizes]
    print(
        table(
            [
                "index size",
                "append new (ms)",
                "lookup (ms)",
                "fresh sort (ms)",
                "append / sort",
                "registry 1st request (ms)",
            ],
            [
                [
                    f"{r['size']:,}",
                    1e3 * r["append_s"],
                    1e3 * r["lookup_s"],
                    1e3 * r["fresh_sort_s"],
                    r["append_ratio"],
                    1e3 * r["registry_first_request_s"],
                ]
                for r in rows
            ],
        )
    )
    out = {"new_per_request": args.new, "sizes": rows}
    if args.json:
        print(json.dumps(out))
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
