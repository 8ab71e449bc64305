"""healthfed's SuperNode loop: pinned to flwr 1.42, one long-lived worker, dead nodes dropped.

The loop (``healthfed.federation.deploy.supernode``) drives private flwr functions
with shorter waits; the first tests fail when the installed flwr changes any of
them. The last ones start a real SuperLink and three healthfed SuperNodes.
"""

from __future__ import annotations

import functools
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import flwr
import pytest
from _proc_helpers import alive, process_tree

from healthfed.errors import FederationError, TooFewSites
from healthfed.federation.deploy import LocalFlowerDeployment
from healthfed.federation.deploy.processes import descendants
from healthfed.federation.deploy.supernode import main as supernode_main
from healthfed.federation.federation import Federation
from healthfed.federation.flwr_pins import (
    FINGERPRINTS,
    OBJECT_PULL_BACKOFF_S,
    fast_object_pulls,
    fingerprint,
    resolve,
    tries_within,
)

TESTS = Path(__file__).resolve().parent
ECHO_APP = "_flower_echo_app:app"
SITES = ["site_a", "site_b", "site_c"]


# --- no processes -----------------------------------------------------------------------
def test_flwr_is_the_pinned_release() -> None:
    assert flwr.__version__.startswith("1.42."), (
        f"flwr {flwr.__version__} is installed; healthfed pins 1.42.* "
        "(healthfed/federation/flwr_pins.py lists what to re-read before moving)"
    )


@pytest.mark.parametrize("name", sorted(FINGERPRINTS))
def test_pinned_flwr_function_is_unchanged(name: str) -> None:
    got = fingerprint(resolve(name))
    assert got == FINGERPRINTS[name], (
        f"the installed flwr changed {name} (sha256 {got[:16]}..., pinned "
        f"{FINGERPRINTS[name][:16]}...). Re-read it: healthfed's SuperNode loop "
        "(healthfed/federation/deploy/supernode.py) mirrors start_client_internal and "
        "calls its helpers; healthfed's SuperLink (healthfed/federation/deploy/"
        "superlink_app.py) replaces flwr's middleware list and holds empty pulls; "
        "fast_object_pulls (healthfed/federation/flwr_pins.py) changes the pulls' "
        "back-off. The comment above its entry in FINGERPRINTS says what to check; "
        "then update FINGERPRINTS there."
    )


def test_the_stock_loop_still_has_the_fixed_sleeps_we_replace() -> None:
    import inspect

    loop = inspect.getsource(resolve("flwr.supernode.start_client_internal.start_client_internal"))
    push = inspect.getsource(resolve("flwr.supernode.start_client_internal._push_messages"))
    assert "time.sleep(3)" in loop and "time.sleep(0.5)" in push


def test_fast_object_pulls_changes_only_the_backoff() -> None:
    module = "flwr.superlink.grid.http_grid"
    original = resolve("flwr.supercore.inflatable.inflatable_utils.pull_objects")
    fast_object_pulls(module)
    fast_object_pulls(module)  # idempotent: never a partial of a partial
    patched = resolve(f"{module}.pull_objects")
    assert isinstance(patched, functools.partial) and patched.func is original
    initial, cap = OBJECT_PULL_BACKOFF_S
    assert patched.keywords == {"initial_backoff": initial, "backoff_cap": cap}


def test_supernode_refuses_bad_options_naming_them() -> None:
    with pytest.raises(FederationError, match="--poll-max"):
        supernode_main(["--poll-max", "0", "--insecure", "--superlink", "127.0.0.1:1"])
    with pytest.raises(FederationError, match="--isolation process"):
        supernode_main(["--insecure", "--superlink", "127.0.0.1:1", "--isolation", "subprocess"])


def test_federation_refuses_a_bad_node_timeout() -> None:
    with pytest.raises(FederationError, match="node_timeout"):
        Federation(lambda r, t: {}, ["a"], "inprocess", node_timeout=0)


def test_unknown_node_kind_is_refused(tmp_path: Path) -> None:
    node = tmp_path / "n.toml"
    node.write_text('[node]\nname = "n"\n', encoding="utf-8")
    with pytest.raises(FederationError, match="node_kind"):
        LocalFlowerDeployment([node], node_kind="fast")


# --- three real healthfed SuperNodes -------------------------------------------------------
@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFlowerDeployment]:
    root = tmp_path_factory.mktemp("loop")
    dep = LocalFlowerDeployment(
        _echo_nodes(root),
        work_dir=root / "work",
        clientapp_ref=ECHO_APP,
        node_pythonpath=[TESTS],
        worker_idle=2,
    )
    try:
        dep.start()
        yield dep
    finally:
        dep.close()


def _echo_nodes(root: Path) -> list[Path]:
    """One node TOML per site of ``SITES`` (the echo app needs only the name)."""
    nodes = []
    for name in SITES:
        path = root / f"{name}.toml"
        path.write_text(f'[node]\nname = "{name}"\n', encoding="utf-8")
        nodes.append(path)
    return nodes


def _wait_for(predicate: object, what: str, limit: float = 60.0, poll: float = 0.1) -> None:
    """Poll until ``predicate()``; a generous limit so a loaded machine never fails it."""
    deadline = time.monotonic() + limit
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(poll)


def _federation(dep: LocalFlowerDeployment, min_sites: int, node_timeout: float = 2) -> Federation:
    return Federation(
        dep.session_run,
        dep.site_names,
        "flower",
        min_sites=min_sites,
        timeout=60,
        node_timeout=node_timeout,
    )


def _round_without_site_c(
    dep: LocalFlowerDeployment,
    params: dict[str, object],
    kill_when: object,
    what: str,
    poll: float = 0.1,
) -> set[int]:
    """An echo round (``min_sites=2``) during which site_c's SuperNode and worker are
    SIGKILLed once ``kill_when()``; the round must finish with site_a and site_b, site_c
    missing. Returns the process tree that was killed."""
    victim = dep.node_processes()["site_c"]
    outcome: dict[str, object] = {}

    def run_round() -> None:
        try:
            outcome["ok"] = _federation(dep, 2).round("echo", "none", params)
        except Exception as exc:  # noqa: BLE001 - checked below
            outcome["error"] = exc

    thread = threading.Thread(target=run_round)
    thread.start()
    _wait_for(kill_when, what, poll=poll)
    tree = process_tree([victim.popen.pid])
    os.killpg(victim.popen.pid, signal.SIGKILL)  # the SuperNode and its worker
    thread.join(timeout=120)
    assert not thread.is_alive()
    assert "error" not in outcome, outcome
    result = outcome["ok"]
    assert sorted(result.contributed) == ["site_a", "site_b"]  # type: ignore[attr-defined]
    assert result.missing == ["site_c"]  # type: ignore[attr-defined]
    return tree


@pytest.mark.flower
def test_one_worker_per_node_leaves_when_idle_and_comes_back(
    deployment: LocalFlowerDeployment,
) -> None:
    nodes = deployment.node_processes()
    assert sorted(nodes) == SITES
    # No separate executor processes: each SuperNode spawned its one worker.
    assert not [p for p in deployment._procs if p.role.startswith("node-exec")]
    # Cold workers start (imports) within the round: on a loaded machine that is more than
    # the 2 s the killed-node test allows after the first reply, so these rounds wait longer.
    first = _federation(deployment, 3, node_timeout=30).round("echo", "none", {"k": 1})
    assert sorted(first.contributed) == SITES
    _wait_for(
        lambda: not any(alive(c) for p in nodes.values() for c in descendants(p.popen.pid)),
        "every idle worker to leave",
    )
    assert all(alive(p.popen.pid) for p in nodes.values())  # the SuperNodes stay
    logs = deployment.node_logs()
    assert all("idle for 2s; exiting" in t for t in logs.values()), logs
    # the worker asked its SuperNode over their socket pair, not over HTTPS
    assert all("Runtime API over the SuperNode's socket pair" in t for t in logs.values()), logs
    ready = {site: t.count("node executor ready") for site, t in logs.items()}
    again = _federation(deployment, 3, node_timeout=30).round("echo", "none", {"k": 2})
    assert sorted(again.contributed) == SITES
    after = {site: t.count("node executor ready") for site, t in deployment.node_logs().items()}
    assert after == {site: n + 1 for site, n in ready.items()}  # one new worker each


@pytest.mark.flower
def test_a_node_killed_mid_round_is_dropped_and_the_round_finishes(
    deployment: LocalFlowerDeployment,
) -> None:
    victim = deployment.node_processes()["site_c"]
    received = victim.log.read_text().count("Receiving: query")
    tree = _round_without_site_c(
        deployment,
        {"hold_sites": ["site_c"], "hold_s": 120},
        lambda: victim.log.read_text().count("Receiving: query") > received,
        "site_c to receive the round",
    )
    assert not [pid for pid in tree if alive(pid)]

    # With three sites required, the same dead node fails the round, named.
    with pytest.raises(TooFewSites, match="site_c") as err:
        _federation(deployment, 3).round("echo", "none", {})
    assert "2s after the first reply" in str(err.value)
    # Flower still lists the dead node; the hub, having dropped it, does not wait for it.
    later = _federation(deployment, 2).round("echo", "none", {})
    assert sorted(later.contributed) == ["site_a", "site_b"] and later.missing == ["site_c"]


@pytest.mark.flower
def test_a_node_killed_between_its_reply_and_the_replys_objects_is_dropped(
    tmp_path: Path,
) -> None:
    """The SuperLink holds the victim's reply message but never its objects: Flower's
    Grid would retry them 500 times (minutes) before returning any reply it pulled."""
    with LocalFlowerDeployment(
        _echo_nodes(tmp_path),
        work_dir=tmp_path / "work",
        clientapp_ref=ECHO_APP,
        node_pythonpath=[TESTS],
        worker_idle=30,
    ) as dep:
        victim = dep.node_processes()["site_c"]
        _federation(dep, 3).round("echo", "none", {})  # every worker up
        node_id = re.search(r"SuperNode ID: (\d+)", victim.log.read_text()).group(1)  # type: ignore[union-attr]
        superlink_log = dep.work_dir / "logs" / "superlink.log"
        pushed = f"Push replies from node_id={node_id}"
        before = superlink_log.read_text().count(pushed)
        # site_c's reply comes first, so the hub pulls it before any other; it is killed
        # (polled every 5 ms) while its 64 MB object is still uploading
        _round_without_site_c(
            dep,
            {
                "pad_sites": ["site_c"],
                "pad_mb": 64,
                "hold_sites": ["site_a", "site_b"],
                "hold_s": 4,
            },
            lambda: superlink_log.read_text().count(pushed) > before,
            "site_c to push its reply",
            poll=0.005,
        )


def test_hub_object_pulls_give_up_after_the_node_timeout() -> None:
    module = "flwr.superlink.grid.http_grid"
    fast_object_pulls(module, stall_s=5.0)
    patched = resolve(f"{module}.pull_objects")
    tries = patched.keywords["max_tries_per_object"]
    assert tries == tries_within(5.0)
    # waits of 20, 40, 80, 160, 320 ms, then 0.5 s: 13 waits (4.62 s) fit in 5 s, 14 do not
    assert tries == 14
    fast_object_pulls(module)  # no bound again: flwr's own
    assert "max_tries_per_object" not in resolve(f"{module}.pull_objects").keywords
