"""Benchmark: a federated Table 1 versus the same pooled computation in DuckDB.

Synthetic COVID-19 cohort, ``--sites`` hospitals x ``--rows`` admissions (default
4 x 1,000,000), the demo's Table 1 (18 variables by 28-day death, plus the grouping
variable: 19 of the cohort's ~20 columns). Times:

* ``pooled_duckdb``: one DuckDB process over all sites' Parquet files at once
  (the baseline: what a data lake with every row pooled would do);
* ``inprocess``: healthfed's in-process engine (4 nodes, each DuckDB over its own file,
  disclosure filter, hub combination);
* ``flower``: the same over a real SuperLink and SuperNodes on loopback (``--flower``).

Prints a table; with ``--json`` the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from healthfed.data.descriptor import load_descriptor
from healthfed.demo import TABLE1_BY, TABLE1_VARIABLES, prepare_nodes
from healthfed.federation.federation import Federation


def pooled_duckdb_table1(data_dir: Path) -> float:
    """Time the pooled Table 1 statistics in one DuckDB query set over all files."""
    import duckdb

    descriptors = [load_descriptor(p) for p in sorted(data_dir.glob("*.toml"))]
    cols = descriptors[0].columns
    # Harmonise units exactly as the nodes do, so the work is the same.
    from healthfed.data.harmonise import conversion_factor

    parts = []
    for d in descriptors:
        exprs = []
        for name in [TABLE1_BY, *TABLE1_VARIABLES]:
            spec = d.columns[name]
            if spec.is_numeric:
                factor = conversion_factor(name, spec.unit)
                exprs.append(f"CAST({name} AS DOUBLE) * {factor!r} AS {name}")
            else:
                exprs.append(f"CAST({name} AS VARCHAR) AS {name}")
        parts.append(f"SELECT {', '.join(exprs)} FROM read_parquet('{d.path}')")
    con = duckdb.connect()
    start = time.perf_counter()
    con.execute(f"CREATE TEMP VIEW pooled AS {' UNION ALL '.join(parts)}")
    numeric = [v for v in TABLE1_VARIABLES if cols[v].is_numeric]
    categorical = [v for v in TABLE1_VARIABLES if not cols[v].is_numeric]
    aggs = []
    for v in numeric:
        aggs += [
            f"count({v})",
            f"count(*) - count({v})",
            f"avg({v})",
            f"stddev_samp({v})",
            f"quantile_cont({v}, [0.25, 0.5, 0.75])",
        ]
    con.execute(
        f"SELECT {TABLE1_BY}, {', '.join(aggs)} FROM pooled GROUP BY GROUPING SETS "
        f"(({TABLE1_BY}), ())"
    ).fetchall()
    for v in categorical:
        con.execute(
            f"SELECT {TABLE1_BY}, {v}, count(*) FROM pooled GROUP BY GROUPING SETS "
            f"(({TABLE1_BY}, {v}), ({v}))"
        ).fetchall()
    elapsed = time.perf_counter() - start
    con.close()
    return elapsed


def federated_table1(node_files: list[Path], engine: str, work_dir: Path) -> tuple[float, object]:
    if engine == "flower":
        fed = Federation.flower(node_files, work_dir=work_dir / "flower")
    else:
        fed = Federation.from_node_files(node_files)
    try:
        start = time.perf_counter()
        result = fed.table1("covid", TABLE1_VARIABLES, by=TABLE1_BY)
        elapsed = time.perf_counter() - start
    finally:
        fed.close()
    return elapsed, result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=4)
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows per site")
    parser.add_argument("--flower", action="store_true", help="also time the Flower engine")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--work-dir", type=Path, default=None)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="healthfed-bench-") as tmp:
        work = args.work_dir or Path(tmp)
        t0 = time.perf_counter()
        node_files = prepare_nodes(work, args.sites, args.rows, seed=0)
        synth_s = time.perf_counter() - t0
        pooled_s = pooled_duckdb_table1(work / "data")
        inproc_s, result = federated_table1(node_files, "inprocess", work)
        # A second in-process run shows the warm (cached) cost of a repeated query.
        inproc_warm_s, _ = federated_table1(node_files, "inprocess", work)
        flower_s = None
        if args.flower:
            flower_s, _ = federated_table1(node_files, "flower", work)

    report = {
        "sites": args.sites,
        "rows_per_site": args.rows,
        "variables": len(TABLE1_VARIABLES) + 1,
        "synth_s": round(synth_s, 3),
        "pooled_duckdb_s": round(pooled_s, 3),
        "inprocess_s": round(inproc_s, 3),
        "inprocess_warm_s": round(inproc_warm_s, 3),
        "ratio_inprocess_vs_pooled_duckdb": round(inproc_s / pooled_s, 2),
        "flower_s": None if flower_s is None else round(flower_s, 3),
        "ratio_flower_vs_pooled_duckdb": None
        if flower_s is None
        else round(flower_s / pooled_s, 2),
        "suppressed_cells": int(result.suppressed_cells),
    }
    print(f"Table 1: {report['variables']} variables, {args.sites} sites x {args.rows:,} rows")
    print(f"{'engine':<28}{'seconds':>10}{'x pooled DuckDB':>18}")
    print(f"{'pooled DuckDB (baseline)':<28}{pooled_s:>10.3f}{1.0:>18.2f}")
    print(f"{'healthfed in-process':<28}{inproc_s:>10.3f}{inproc_s / pooled_s:>18.2f}")
    print(
        f"{'healthfed in-process, again':<28}{inproc_warm_s:>10.3f}{inproc_warm_s / pooled_s:>18.2f}"
    )
    if flower_s is not None:
        print(f"{'healthfed over Flower':<28}{flower_s:>10.3f}{flower_s / pooled_s:>18.2f}")
    else:
        print(f"{'healthfed over Flower':<28}{'(run with --flower)':>28}")
    if args.json:
        print(json.dumps(report))
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
