"""Class 7, denial of service: ``feature_moments`` with a very long column list.

One ordinary-looking request (the same numeric column listed ``COLUMNS`` times, on the
``tcga`` dataset, which the opt-out attack before it leaves untouched) used to segfault the node process or keep it busy for minutes. In-process the request runs
in a *subprocess* with a timeout, so the bench survives a crash; over Flower it goes to
the deployment's nodes, and a cheap ``count`` afterwards checks they still answer. The
attack "leaks" availability when a node dies or takes longer than ``LIMIT_S``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from _attacks.base import Context, Refused, attack
from _attacks.world import RESEARCHER

COLUMNS = 5000
LIMIT_S = 30.0
PARAMS = {"columns": ["age_at_index"] * COLUMNS}

_CHILD = """
import json, sys
from healthfed.errors import HealthfedError, TooFewSites
from healthfed.federation.federation import Federation
node_files, permit, requester, params = json.loads(sys.argv[1])
with Federation.from_node_files(node_files, permit=permit, requester=requester) as fed:
    try:
        fed.round("feature_moments", "tcga", params)
        print("ANSWERED")
    except TooFewSites as exc:
        print("REFUSED " + "; ".join(f"{s}: {r}" for s, r in sorted(exc.refusals.items())))
    except HealthfedError as exc:
        print("REFUSED " + str(exc))
"""


def _inprocess(ctx: Context) -> tuple[bool, str]:
    permit = str(ctx.world.hub.permit_path(ctx.world.permits["tcga"]["permit"]["permit_id"]))
    arg = json.dumps([[str(p) for p in ctx.world.node_files], permit, RESEARCHER, PARAMS])
    n = len(PARAMS["columns"])
    start = time.perf_counter()
    ctx.rounds += 1
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD, arg],
            capture_output=True,
            text=True,
            timeout=LIMIT_S,
            cwd=Path(__file__).resolve().parents[2],
        )
    except subprocess.TimeoutExpired:
        return True, f"{n} columns: the node was still busy after {LIMIT_S:g} s (killed)"
    took = time.perf_counter() - start
    if proc.returncode < 0:
        return (
            True,
            f"{n} columns: the node process died (signal {-proc.returncode}) after {took:.1f} s",
        )
    out = proc.stdout.strip().splitlines()
    last = out[-1] if out else f"exit {proc.returncode}: {proc.stderr.strip()[-200:]}"
    if last.startswith("REFUSED"):
        raise Refused(last[len("REFUSED ") :])
    return False, f"{n} columns: the node answered in {took:.1f} s ({last})"


def _flower(ctx: Context) -> tuple[bool, str]:
    n = len(PARAMS["columns"])
    saved = ctx.fed.timeout
    ctx.fed.timeout = LIMIT_S + 5.0
    start = time.perf_counter()
    try:
        try:
            ctx.round("feature_moments", "tcga", PARAMS, permit="tcga")
            refusal = None
        except Refused as exc:
            refusal = str(exc)
        took = time.perf_counter() - start
        ctx.fed.timeout = 60.0
        try:
            ctx.round("count", "tcga", {}, permit="tcga")
            alive = True
        except Refused:
            alive = False
    finally:
        ctx.fed.timeout = saved
    if not alive or took > LIMIT_S:
        return True, f"{n} columns: took {took:.1f} s; nodes answer afterwards: {alive}"
    if refusal is not None:
        raise Refused(refusal)
    return False, f"{n} columns: the nodes answered in {took:.1f} s and still answer"


@attack("denial of service: feature_moments over a very long column list", "7 denial of service")
def long_column_list(ctx: Context) -> tuple[bool, str]:
    return _flower(ctx) if ctx.engine == "flower" else _inprocess(ctx)
