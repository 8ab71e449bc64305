"""Benchmark: deployed rounds (SuperLink + SuperNodes, TLS, loopback) against in-process.

Every deployed number is set next to healthfed's in-process engine measured in the
same run on the same node files (ratio = deployed / in-process):

* ``round_p50_s`` / ``round_p99_s``: ``--requests`` (100) small requests (a pooled
  count) one after another, demo data (4 sites x 5,000 rows, default site policy);
  also a few over stock ``flower-supernode`` nodes (``node_kind="stock"``);
* ``table1_s``: the demo's Table 1 (one round);
* ``exact_lr_s``: exact logistic regression, 4 x 250,000 rows (bench/speed.py's
  features), cold node caches, with bytes per round (the target); ``exact_lr_warm_s``:
  the same fit once more on the same nodes (caches warm; reported, not a target);
* ``cold_start_s``: from no process to the first result (start everything, one count);
* ``idle_node_rss_mb``: RSS of one healthfed SuperNode after its data worker left
  (``--worker-idle``, shortened here from the default 120 s so the bench does not
  wait); also with the worker alive, and a stock node with its executor;
* ``dead_node_round_s``: a Table 1 during which one of the 4 SuperNodes is killed
  (SIGKILL) as it receives the request; the hub drops it ``node_timeout`` (5 s)
  after the first reply and the round finishes with the 3 others;
* ``inprocess_sites``: 25, 50, 100 in-process sites (Table 1 and the exact LR), time
  per added site by least squares;
* ``deployed_sites``: ``--deployed-sites`` (20) healthfed SuperNodes on this machine:
  start, small-request p50, Table 1 and the exact LR.

The exact LR (and both scale runs) use the *stated bench policy* of bench/speed.py
(``min_cell_count=1, dominance_k=100, eta_bound=50``): the default policy refuses
this synthetic design (a score cell of 1-4 patients at one site; |eta| above the
default bound). Table 1 and the round trips use the default policy.

Prints a table; with ``--json`` the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ByteCounter, table  # noqa: E402
from speed import DATASET, FEATURES, TARGET  # noqa: E402  (the same fit as bench/speed.py)

from healthfed.compute.glm import FederatedLogisticRegression  # noqa: E402
from healthfed.compute.preprocess import clear_design_cache  # noqa: E402
from healthfed.data.synth import write_covid_cohort  # noqa: E402
from healthfed.demo import TABLE1_BY, TABLE1_VARIABLES, prepare_nodes  # noqa: E402
from healthfed.federation.deploy.local import LocalFlowerDeployment  # noqa: E402
from healthfed.federation.deploy.processes import descendants  # noqa: E402
from healthfed.federation.federation import Federation  # noqa: E402
from healthfed.node.runtime import write_node_file  # noqa: E402
from healthfed.policy import SitePolicy  # noqa: E402

BENCH_POLICY = SitePolicy(min_cell_count=1, dominance_k=100.0, eta_bound=50.0)  # as speed.py
TARGETS = {"round_p50_s": 0.2, "round_p99_s": 0.5, "table1_s": 1.0, "exact_lr_s": 3.0}
TARGETS |= {"cold_start_s": 5.0, "idle_node_rss_mb": 120.0, "dead_node_round_s": 10.0}
RATIOS = {  # deployed / in-process, same run
    "round_p50_ratio": ("round_p50_s", "round_inprocess_p50_s"),
    "round_p99_ratio": ("round_p99_s", "round_inprocess_p99_s"),
    "table1_ratio": ("table1_s", "table1_inprocess_s"),
    "exact_lr_ratio": ("exact_lr_s", "exact_lr_inprocess_s"),
    "exact_lr_warm_ratio": ("exact_lr_warm_s", "exact_lr_warm_inprocess_s"),
    "cold_start_ratio": ("cold_start_s", "cold_start_inprocess_s"),
}


# --- helpers ---------------------------------------------------------------------------------
def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def percentile(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


def rss_mb(pids: list[int]) -> float:
    """Resident memory (VmRSS) of ``pids`` and all their descendants, in MB."""
    total = 0
    for pid in {p for root in pids for p in (root, *descendants(root))}:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def bench_nodes(work: Path, sites: int, rows: int) -> list[Path]:
    """Synthetic hospitals under the stated bench policy (see the module docstring)."""
    written = write_covid_cohort(work / "data", sites=sites, rows=rows, seed=0)
    descs = sorted(p for p in written if p.suffix == ".toml")
    return [
        write_node_file(work / "nodes" / f"{d.stem}.toml", d.stem, [d], policy=BENCH_POLICY)
        for d in descs
    ]


def deployed(nodes: list[Path], work: Path, **kwargs: Any) -> tuple[Federation, Any]:
    # 20 SuperNodes and their workers importing at once on 2 cores take over a minute
    dep = LocalFlowerDeployment(
        nodes, work_dir=work, open_session=True, startup_timeout=600, **kwargs
    )
    dep.start()
    fed = Federation(dep.session_run, dep.site_names, "flower", on_close=dep.close, timeout=600)
    return fed, dep


def count_rounds(fed: Federation, n: int) -> list[float]:
    return [timed(lambda: fed.count(DATASET))[0] for _ in range(n)]


def table1(fed: Federation) -> Any:
    return fed.table1(DATASET, TABLE1_VARIABLES, by=TABLE1_BY)


def exact_lr(
    fed: Federation, cold: bool = True
) -> tuple[float, FederatedLogisticRegression, ByteCounter]:
    counter = ByteCounter(fed._transport)
    fed._transport = counter
    try:
        if cold:
            clear_design_cache()  # in-process: cold, as a new deployed worker is
        t, model = timed(lambda: FederatedLogisticRegression().fit(fed, DATASET, TARGET, FEATURES))
        return t, model, counter
    finally:
        fed._transport = counter._transport


def wait_until(pred: Callable[[], bool], limit: float) -> bool:
    deadline = time.monotonic() + limit
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


# --- parts -----------------------------------------------------------------------------------
def demo_part(work: Path, requests: int, stock_requests: int, worker_idle: float) -> dict:
    """Cold start, round trips, Table 1, idle memory and a killed node on the demo data."""
    nodes = prepare_nodes(work / "demo", 4, 5000, seed=0)
    out: dict[str, Any] = {}
    # in-process baselines
    t_cold_in, fed_in = timed(lambda: Federation.from_node_files(nodes))
    t_first, _ = timed(lambda: fed_in.count(DATASET))
    out["cold_start_inprocess_s"] = t_cold_in + t_first
    inproc = count_rounds(fed_in, requests)
    out["round_inprocess_p50_s"] = percentile(inproc, 50)
    out["round_inprocess_p99_s"] = percentile(inproc, 99)
    out["table1_inprocess_s"], _ = timed(lambda: table1(fed_in))
    fed_in.close()

    t0 = time.perf_counter()
    fed, dep = deployed(nodes, work / "flower-demo", worker_idle=worker_idle)
    try:
        out["start_s"] = time.perf_counter() - t0
        fed.count(DATASET)
        out["cold_start_s"] = time.perf_counter() - t0
        rounds = count_rounds(fed, requests)
        out["round_p50_s"], out["round_p99_s"] = percentile(rounds, 50), percentile(rounds, 99)
        out["round_max_s"] = max(rounds)
        out["table1_s"], result = timed(lambda: table1(fed))
        out["table1_suppressed_cells"] = int(result.suppressed_cells)
        out |= dead_node(fed, dep)  # workers still up: a killed node, not a cold worker
        procs = dep.node_processes()
        pids = [p.popen.pid for site, p in sorted(procs.items())[:-1]]  # the living ones
        out["busy_node_rss_mb"] = rss_mb(pids[:1])  # SuperNode + its live worker
        gone = wait_until(
            lambda: not any(descendants(p) for p in pids), worker_idle + 30
        )  # every worker left when idle
        out["idle_node_rss_mb"] = rss_mb(pids[:1])
        out["idle_worker_left"] = gone
    finally:
        fed.close()

    fed, dep = deployed(nodes, work / "flower-stock", node_kind="stock")
    try:
        fed.count(DATASET)
        stock = count_rounds(fed, stock_requests)
        out["stock_round_p50_s"] = percentile(stock, 50)
        out["stock_requests"] = stock_requests
        pids = [
            p.popen.pid for p in dep._procs if p.role.startswith(("supernode-0", "node-exec-0"))
        ]
        out["stock_idle_node_rss_mb"] = rss_mb(pids)
    finally:
        fed.close()
    return out


def dead_node(fed: Federation, dep: Any) -> dict:
    """Table 1 while the last SuperNode is SIGKILLed on receiving it; the rest finish.

    Its data worker is stopped (SIGSTOP) first: a worker answers a Table 1 in well
    under 0.1 s, so a kill on receiving would often land after the reply left."""
    site, proc = sorted(dep.node_processes().items())[-1]
    seen = proc.log.read_text().count("Receiving: query")
    for pid in descendants(proc.popen.pid):
        os.kill(pid, signal.SIGSTOP)
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["t"], box["result"] = timed(lambda: table1(fed))
        except Exception as exc:  # noqa: BLE001 - reported
            box["error"] = f"{type(exc).__name__}: {exc}"

    thread = threading.Thread(target=run)
    thread.start()
    wait_until(lambda: proc.log.read_text().count("Receiving: query") > seen, 60)
    os.killpg(proc.popen.pid, signal.SIGKILL)
    thread.join()
    result = box.get("result")
    return {
        "dead_node_round_s": box.get("t"),
        "dead_node_killed": site,
        "dead_node_missing": None if result is None else list(result.missing_sites),
        "dead_node_sites": None if result is None else list(result.sites),
        "dead_node_error": box.get("error"),
        "node_timeout_s": fed.node_timeout,
    }


def lr_part(work: Path, sites: int, rows: int) -> dict:
    nodes = bench_nodes(work / "lr", sites, rows)
    out: dict[str, Any] = {}
    fed_in = Federation.from_node_files(nodes)
    out["exact_lr_inprocess_s"], model_in, _ = exact_lr(fed_in)
    out["exact_lr_warm_inprocess_s"] = exact_lr(fed_in, cold=False)[0]
    fed_in.close()
    fed, _dep = deployed(nodes, work / "flower-lr")
    try:
        t, model, counter = exact_lr(fed)
        # the same fit again: the workers' caches (design, cohort check) are warm
        out["exact_lr_warm_s"] = exact_lr(fed, cold=False)[0]
    finally:
        fed.close()
    out["exact_lr_s"], out["exact_lr_rounds"] = t, model.rounds_
    out["exact_lr_bytes_per_round"] = int(np.mean([r["bytes"] for r in counter.rounds]))
    out["exact_lr_max_abs_coef_diff"] = float(np.max(np.abs(model.params_ - model_in.params_)))
    return out


def inprocess_sites(work: Path, counts: list[int], rows: int) -> dict:
    nodes = bench_nodes(work / "scale-in", max(counts), rows)
    t1, lr = [], []
    for n in counts:
        fed = Federation.from_node_files(nodes[:n])
        t1.append(timed(functools.partial(table1, fed))[0])
        lr.append(exact_lr(fed)[0])
        fed.close()
    return {
        "sites": counts,
        "rows_per_site": rows,
        "table1_s": t1,
        "exact_lr_s": lr,
        "table1_s_per_added_site": float(np.polyfit(counts, t1, 1)[0]),
        "exact_lr_s_per_added_site": float(np.polyfit(counts, lr, 1)[0]),
    }


def deployed_sites(work: Path, n: int, rows: int, requests: int) -> dict:
    nodes = bench_nodes(work / "scale-dep", n, rows)
    t0 = time.perf_counter()
    fed, _dep = deployed(nodes, work / "flower-scale")
    try:
        out: dict[str, Any] = {"sites": n, "rows_per_site": rows}
        out["start_s"] = time.perf_counter() - t0
        rounds = count_rounds(fed, requests)
        out["round_p50_s"] = percentile(rounds, 50)
        out["round_max_s"] = max(rounds)
        out["table1_s"] = timed(lambda: table1(fed))[0]
        out["exact_lr_s"] = exact_lr(fed)[0]
        out["contributed"] = len(fed.count(DATASET).sites)
    finally:
        fed.close()
    return out


PARTS = ("demo", "lr", "inprocess_sites", "deployed_sites")


# --- main ------------------------------------------------------------------------------------
def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--stock-requests", type=int, default=10)
    parser.add_argument("--lr-rows", type=int, default=250_000, help="rows per site (4 sites)")
    parser.add_argument("--worker-idle", type=float, default=15.0)
    parser.add_argument("--inprocess-sites", type=int, nargs="+", default=[25, 50, 100])
    parser.add_argument("--deployed-sites", type=int, default=20)
    parser.add_argument("--scale-rows", type=int, default=2000, help="rows per site, scale runs")
    parser.add_argument(
        "--parts",
        nargs="+",
        choices=PARTS,
        default=list(PARTS),
        help="run only these parts (default: all; the table needs all)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.requests < 2 or args.deployed_sites < 2:
        parser.error("--requests and --deployed-sites must be at least 2")

    with tempfile.TemporaryDirectory(prefix="healthfed-deployed-") as tmp:
        work = Path(tmp)
        r: dict[str, Any] = {
            "cpus": os.cpu_count(),
            "policy_lr": "bench/speed.py's stated bench policy",
        }
        parts: list[tuple[str, str | None, Callable[[], dict]]] = [
            (
                "demo",
                None,
                lambda: demo_part(work, args.requests, args.stock_requests, args.worker_idle),
            ),
            ("lr", None, lambda: lr_part(work, 4, args.lr_rows)),
            (
                "inprocess_sites",
                "inprocess_sites",
                lambda: inprocess_sites(work, args.inprocess_sites, args.scale_rows),
            ),
            (
                "deployed_sites",
                "deployed_sites",
                lambda: deployed_sites(work, args.deployed_sites, args.scale_rows, 10),
            ),
        ]
        for name, key, part in parts:
            if name not in args.parts:
                continue
            try:
                got = part()
            except Exception as exc:  # noqa: BLE001 - reported, never faked
                got = {"error": f"{type(exc).__name__}: {str(exc)[:500]}"}
                print(f"part failed: {got['error']}", file=sys.stderr)
            if key is None:
                r |= got
            else:
                r[key] = got
    for name, (num, den) in RATIOS.items():
        r[name] = ratio(r.get(num), r.get(den))
    r["targets"] = TARGETS
    r["met"] = {k: (r.get(k) is not None and r[k] <= v) for k, v in TARGETS.items()}

    try:  # a failed part leaves its rows out of the table; the JSON says why
        rows = [
            [
                "small request p50 (s)",
                r["round_p50_s"],
                r["round_inprocess_p50_s"],
                r["round_p50_ratio"],
                0.2,
            ],
            [
                "small request p99 (s)",
                r["round_p99_s"],
                r["round_inprocess_p99_s"],
                r["round_p99_ratio"],
                0.5,
            ],
            ["Table 1 (s)", r["table1_s"], r["table1_inprocess_s"], r["table1_ratio"], 1.0],
            [
                "exact LR 4 x rows (s)",
                r["exact_lr_s"],
                r["exact_lr_inprocess_s"],
                r["exact_lr_ratio"],
                3.0,
            ],
            [
                "cold start to result (s)",
                r["cold_start_s"],
                r["cold_start_inprocess_s"],
                r["cold_start_ratio"],
                5.0,
            ],
        ]
        print(
            f"Deployed (SuperLink + SuperNodes, TLS, loopback) vs in-process, {os.cpu_count()} CPUs"
        )
        print(table(["measure", "deployed", "in-process", "ratio", "target"], rows))
        print(table(
            ["other", "value"],
            [
                ["stock flower-supernode request p50 (s)", r["stock_round_p50_s"]],
                ["idle node RSS, worker gone (MB)", r["idle_node_rss_mb"]],
                ["node RSS with its worker (MB)", r["busy_node_rss_mb"]],
                ["stock node + executor RSS (MB)", r["stock_idle_node_rss_mb"]],
                [f"Table 1 with {r['dead_node_killed']} killed (s)", r["dead_node_round_s"] or "failed"],
                ["exact LR rounds / bytes per round", f"{r['exact_lr_rounds']} / {r['exact_lr_bytes_per_round']:,}"],
                ["exact LR again, warm caches: deployed / in-process (s)",
                 f"{r['exact_lr_warm_s']:.2f} / {r['exact_lr_warm_inprocess_s']:.2f}"],
                [f"{r['deployed_sites']['sites']} deployed: start / p50 / Table 1 / LR (s)",
                 " / ".join(f"{r['deployed_sites'][k]:.2f}" for k in ("start_s", "round_p50_s", "table1_s", "exact_lr_s"))],
                ["in-process s per added site: Table 1 / LR",
                 f"{r['inprocess_sites']['table1_s_per_added_site']:.4f} / {r['inprocess_sites']['exact_lr_s_per_added_site']:.4f}"],
            ],
        ))  # fmt: skip
    except (KeyError, TypeError) as exc:
        print(f"table incomplete (a part failed): {exc!r}")
    if args.json:
        print(json.dumps(r))
    return r


if __name__ == "__main__":
    main(sys.argv[1:])
