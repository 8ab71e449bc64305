"""Where the CPU of a small deployed round goes: per process, per HTTP request, py-spy.

Starts the demo deployment (4 sites x 5,000 rows, healthfed SuperNodes, TLS on
loopback), warms it up, then runs ``--rounds`` small requests (a pooled count) and
reports, per round:

* CPU seconds of each kind of process (``/proc/<pid>/stat`` utime + stime before and
  after): the SuperLink, its SuperExec and ServerApp, the SuperNodes, their workers;
* with ``--requests-log``: HTTP requests the SuperLink served, by path, and how many
  client connections they came on (uvicorn's access log at ``FLWR_LOG_LEVEL=DEBUG``;
  a new client port is a new TCP + TLS connection);
* with ``--py-spy DIR``: ``py-spy record`` (raw collapsed stacks) of the SuperLink,
  the ServerApp, one SuperNode and its worker during the rounds, and the top
  functions by own and total samples.

This is a diagnostic (no targets); ``bench/deployed.py`` is the benchmark.
With ``--json`` the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from deployed import percentile, timed  # noqa: E402

from healthfed.demo import prepare_nodes  # noqa: E402
from healthfed.federation.deploy.local import LocalFlowerDeployment  # noqa: E402
from healthfed.federation.deploy.processes import descendants  # noqa: E402
from healthfed.federation.federation import Federation  # noqa: E402

DATASET = "covid"
CLK = os.sysconf("SC_CLK_TCK")


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def cpu_s(pid: int) -> float:
    """utime + stime of ``pid`` in seconds (0 when it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rfind(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def kind(cmd: str) -> str:
    if "flower-superlink" in cmd or "deploy superlink" in cmd:
        return "superlink"
    if "flower-superexec" in cmd:
        return "superexec"
    if "flwr-serverapp" in cmd:
        return "serverapp"
    if "node-exec" in cmd:
        return "worker"
    if "supernode" in cmd:
        return "supernode"
    return "other"


def processes(dep: LocalFlowerDeployment) -> dict[int, str]:
    """Every process of the deployment (and their descendants) by kind."""
    out: dict[int, str] = {}
    for proc in dep._procs:
        for pid in (proc.popen.pid, *descendants(proc.popen.pid)):
            out[pid] = kind(cmdline(pid))
    # SuperExec detaches; find it (and the ServerApp) by FLWR_HOME under the work dir
    for entry in Path("/proc").glob("[0-9]*"):
        pid = int(entry.name)
        if pid in out:
            continue
        cmd = cmdline(pid)
        if ("flower-superexec" in cmd or "flwr-serverapp" in cmd) and _env_has(
            pid, str(dep.work_dir)
        ):
            out[pid] = kind(cmd)
            for child in descendants(pid):
                out[child] = kind(cmdline(child))
    return out


def _env_has(pid: int, text: str) -> bool:
    try:
        return text.encode() in Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False


ACCESS = re.compile(r"(\d+\.\d+\.\d+\.\d+):(\d+) - \"(\w+) (\S+)")


def access_counts(log: Path, start: int) -> tuple[collections.Counter[str], set[str]]:
    text = log.read_text(encoding="utf-8", errors="replace")[start:]
    paths: collections.Counter[str] = collections.Counter()
    ports: set[str] = set()
    for m in ACCESS.finditer(text):
        paths[m.group(4)] += 1
        ports.add(m.group(2))
    return paths, ports


def top_functions(raw: Path, n: int = 25) -> dict[str, list[tuple[str, float]]]:
    """From py-spy's raw (collapsed) output: top functions by own and total share."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        c = int(count)
        samples += c
        frames = stack.split(";")
        own[frames[-1]] += c
        for f in set(frames):
            total[f] += c
    if not samples:
        return {"own": [], "total": []}
    return {
        "samples": samples,  # type: ignore[dict-item]
        "own": [(f, round(c / samples, 3)) for f, c in own.most_common(n)],
        "total": [(f, round(c / samples, 3)) for f, c in total.most_common(n)],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--sites", type=int, default=4)
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--requests-log", action="store_true", help="FLWR_LOG_LEVEL=DEBUG")
    parser.add_argument("--py-spy", type=Path, default=None, help="write py-spy output here")
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    parser.add_argument("--gil", action="store_true", help="py-spy: only threads holding the GIL")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.requests_log:
        os.environ["FLWR_LOG_LEVEL"] = "DEBUG"

    out: dict[str, Any] = {"rounds": args.rounds, "sites": args.sites}
    with tempfile.TemporaryDirectory(prefix="healthfed-profile-") as tmp:
        work = Path(tmp)
        nodes = prepare_nodes(work / "demo", args.sites, args.rows, seed=0)
        t0 = time.perf_counter()
        dep = LocalFlowerDeployment(nodes, work_dir=work / "flower", open_session=True)
        dep.start()
        fed = Federation(dep.session_run, dep.site_names, "flower", on_close=dep.close)
        try:
            out["start_s"] = time.perf_counter() - t0
            fed.count(DATASET)
            out["cold_start_s"] = time.perf_counter() - t0
            for _ in range(3):
                fed.count(DATASET)
            procs = processes(dep)
            log = next(p.log for p in dep._procs if p.role == "superlink")
            log_start = len(log.read_text(encoding="utf-8", errors="replace"))
            node_log = next(p.log for p in dep._procs if p.role.startswith("supernode-0"))
            node_log_start = len(node_log.read_text(encoding="utf-8", errors="replace"))
            spies: list[tuple[str, subprocess.Popen[bytes], Path]] = []
            if args.py_spy is not None:
                args.py_spy.mkdir(parents=True, exist_ok=True)
                wanted = {}
                for pid, k in sorted(procs.items()):
                    wanted.setdefault(k, pid)  # the first of each kind (one SuperNode)
                spy = Path(sys.executable).parent / "py-spy"
                for k, pid in wanted.items():
                    if k in ("other", "superexec"):
                        continue
                    raw = args.py_spy / f"{k}.txt"
                    cmd = [str(spy), "record", "-p", str(pid), "-r", str(args.rate)]
                    cmd += ["-f", "raw", "-o", str(raw), "--nonblocking"]
                    cmd += ["--gil"] if args.gil else []
                    spies.append((k, subprocess.Popen(cmd, stdout=subprocess.DEVNULL), raw))
                time.sleep(1.0)  # py-spy attached
            before = {pid: cpu_s(pid) for pid in procs}
            t_rounds = time.perf_counter()
            rounds = [timed(lambda: fed.count(DATASET))[0] for _ in range(args.rounds)]
            wall = time.perf_counter() - t_rounds
            after = {pid: cpu_s(pid) for pid in procs}
            for _, popen, _ in spies:
                popen.send_signal(2)  # SIGINT: py-spy writes its output
            for _, popen, _ in spies:
                popen.wait(timeout=60)
            cpu: collections.Counter[str] = collections.Counter()
            for pid, k in procs.items():
                cpu[k] += max(after[pid] - before[pid], 0.0)
            out["round_p50_s"] = percentile(rounds, 50)
            out["round_p99_s"] = percentile(rounds, 99)
            out["wall_per_round_s"] = wall / args.rounds
            out["cpu_per_round_s"] = {k: v / args.rounds for k, v in sorted(cpu.items())}
            out["cpu_per_round_total_s"] = sum(cpu.values()) / args.rounds
            out["processes"] = collections.Counter(procs.values())
            if args.requests_log:
                paths, ports = access_counts(log, log_start)
                out["superlink_requests_per_round"] = sum(paths.values()) / args.rounds
                out["superlink_connections"] = len(ports)
                out["superlink_requests_by_path"] = {
                    p: c / args.rounds for p, c in paths.most_common()
                }
                paths, ports = access_counts(node_log, node_log_start)
                out["node_runtime_requests_per_round"] = sum(paths.values()) / args.rounds
                out["node_runtime_connections"] = len(ports)
                out["node_runtime_requests_by_path"] = {
                    p: c / args.rounds for p, c in paths.most_common()
                }
            if spies:
                out["py_spy"] = {k: top_functions(raw) for k, _, raw in spies}
        finally:
            fed.close()
    if args.json:
        print(json.dumps(out))
    else:
        print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
