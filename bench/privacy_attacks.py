"""Benchmark: the privacy attacks of issue 11, run on both engines, each checked against the truth.

One attack per class (crafted model parameters, cross-products, differencing, budget,
scope, zero cells, denial of service; see ``bench/_attacks/``), each written against the
public API only (``Federation.round`` with ordinary requests under permits granted by
a local hub) and each deciding "leak" by comparing what it recovered with the values
read directly from the data. A refusal is not a leak; its reason is shown. The noise
bounds are in ``bench/_attacks/__init__.py``.

Engines (``--engines``, default both): ``inprocess`` (governed nodes in this process;
the denial of service runs in a subprocess with a timeout) and ``flower`` (one real
SuperLink and two SuperNodes on loopback with TLS for all attacks, always stopped).

Also measured (in-process): the released fraction of Table 1 cells on the demo cohort
and with one site of 30 patients added, the pooled Kaplan-Meier steps on Fed-TCGA-BRCA
(all regions) and the exact GLM's largest coefficient difference from the pooled fit.

Prints a table; with ``--json`` the last line is one JSON object (keys ``attacks``,
``leaks``, ``table1_cells_released_fraction``, ``km_pooled_steps``,
``glm_max_abs_coef_diff_vs_pooled``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _attacks.base import ATTACKS, AttackResult, Context, run_attack  # noqa: E402
from _attacks.utility import glm_exactness, km_pooled_steps, table1_fraction  # noqa: E402
from _attacks.world import RESEARCHER, attack_policy, build_data, build_world  # noqa: E402
from _common import table  # noqa: E402

from healthfed.federation.federation import Federation  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
ENGINES = ("inprocess", "flower")
#: The attack modules, in the order their attacks run: the opt-out attack changes a
#: site's data and the denial of service may take the nodes down, so they come last.
ATTACK_MODULES = (
    "model_params",
    "cross_products",
    "differencing",
    "lp_releases",
    "averaging",
    "budget",
    "scope_zero",
    "optout",
    "dos",
)
for _module in ATTACK_MODULES:
    importlib.import_module(f"_attacks.{_module}")  # each module registers its attacks


def run_engine(
    engine: str, root: Path, descs: dict, truth: dict, dos_columns: int, only: str = ""
) -> list:
    """Every attack on one engine: one federation (one Flower deployment) for all of them."""
    dos = importlib.import_module("_attacks.dos")
    dos.PARAMS["columns"] = [dos.PARAMS["columns"][0]] * dos_columns
    world = build_world(root / engine, descs, truth, attack_policy())
    kwargs: dict[str, Any] = {"requester": RESEARCHER, "hub": world.hub}
    if engine == "flower":
        os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
        os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
        fed = Federation.flower(
            world.node_files, work_dir=root / "flower-run", timeout=60, **kwargs
        )
    else:
        fed = Federation.from_node_files(world.node_files, **kwargs)
    results: list[AttackResult] = []
    try:
        ctx = Context(engine, fed, world)
        for name, klass, fn in ATTACKS:
            if only and only not in name:
                continue
            results.append(run_attack(name, klass, fn, ctx))
            print(f"  [{engine}] {name}: {'LEAK' if results[-1].leak else 'no leak'}", flush=True)
    finally:
        fed.close()
        world.close()
    return results


def _short(text: str | None, width: int = 70) -> str:
    if not text:
        return ""
    return text if len(text) <= width else text[: width - 3] + "..."


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", default=",".join(ENGINES), help="inprocess,flower")
    parser.add_argument("--demo-sites", type=int, default=4)
    parser.add_argument("--demo-rows", type=int, default=5000, help="rows per demo site")
    parser.add_argument(
        "--dos-columns", type=int, default=importlib.import_module("_attacks.dos").COLUMNS
    )
    parser.add_argument("--no-utility", action="store_true", help="attacks only")
    parser.add_argument("--only", default="", help="run only attacks whose name contains this")
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    bad = sorted(set(engines) - set(ENGINES))
    if bad:
        parser.error(f"unknown engine(s) {bad}; choose from {list(ENGINES)}")

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="healthfed-attacks-") as tmp:
        root = args.work_dir or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        descs, truth = build_data(root, SHARED)
        results = [
            r
            for e in engines
            for r in run_engine(e, root, descs, truth, args.dos_columns, args.only)
        ]
        utility: dict[str, Any] = {}
        if not args.no_utility:
            fractions, demo_nodes = table1_fraction(
                root / "utility", args.demo_sites, args.demo_rows
            )
            glm = glm_exactness(demo_nodes)
            utility = {
                "table1_cells_released_fraction": fractions,
                "km_pooled_steps": km_pooled_steps(SHARED),
                "glm_max_abs_coef_diff_vs_pooled": glm["diff"],
                "glm_features": glm["features"],
                "glm_refusals": glm["refusals"],
            }
    report: dict[str, Any] = {
        "attacks": [r.to_dict() for r in results],
        "leaks": sum(r.leak for r in results),
        "leaks_by_engine": {e: sum(r.leak for r in results if r.engine == e) for e in engines},
        "table1_cells_released_fraction": utility.get("table1_cells_released_fraction"),
        "km_pooled_steps": utility.get("km_pooled_steps"),
        "glm_max_abs_coef_diff_vs_pooled": utility.get("glm_max_abs_coef_diff_vs_pooled"),
        "glm_features": utility.get("glm_features"),
        "glm_refusals": utility.get("glm_refusals"),
        "engines": engines,
        "policy": attack_policy().to_dict(),
        "seconds": round(time.perf_counter() - start, 1),
    }
    rows = [
        [r.name, r.engine, "LEAK" if r.leak else "-", r.rounds, _short(r.refusal or r.detail)]
        for r in results
    ]
    print(table(["attack", "engine", "leak", "rounds", "recovered / refusal"], rows))
    print(f"\nleaks: {report['leaks']} of {len(results)} attack runs")
    if utility:
        print(f"Table 1 cells released: {utility['table1_cells_released_fraction']}")
        print(f"pooled KM steps (TCGA-BRCA, 6 regions): {utility['km_pooled_steps']}")
        print(
            f"GLM max |federated - pooled| coefficient: "
            f"{utility['glm_max_abs_coef_diff_vs_pooled']} (features {utility['glm_features']})"
        )
        for features, why in utility["glm_refusals"].items():
            print(f"  GLM on {features} refused: {_short(why, 200)}")
    print(f"wall time {report['seconds']} s")
    if args.json:
        print(json.dumps(report, default=str))
    return report


if __name__ == "__main__":
    main()
