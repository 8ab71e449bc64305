"""A real Flower SuperLink and SuperNodes on loopback with TLS (flwr 1.42).

Most tests share one 2-site deployment (startup costs seconds); it is always
closed, and the last test checks that closing leaves no process behind.
"""

from __future__ import annotations

import hashlib
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from _proc_helpers import alive, listening_addresses, process_tree

from healthfed.errors import FederationError
from healthfed.federation.deploy import (
    CLIENTAPP_REF,
    LocalFlowerDeployment,
    app_fab,
    app_fab_hash,
    build_fab,
    fab_refusal,
    generate_loopback_tls,
    node_config_arg,
)
from healthfed.federation.deploy.bundle import APP_PYPROJECT

TESTS = Path(__file__).resolve().parent
ECHO_APP = "_flower_echo_app:app"


def _node_file(directory: Path, name: str) -> Path:
    path = directory / f"{name}.toml"
    path.write_text(f'[node]\nname = "{name}"\n', encoding="utf-8")
    return path


# --- no processes -----------------------------------------------------------------------
def test_app_bundle_is_code_free_and_deterministic() -> None:
    import io
    import zipfile

    fab = app_fab()
    assert build_fab({"pyproject.toml": APP_PYPROJECT.encode()}) == fab
    names = zipfile.ZipFile(io.BytesIO(fab)).namelist()
    assert sorted(names) == [".info/CONTENT", "pyproject.toml"]  # no Python code travels
    assert fab_refusal(fab) is None
    assert app_fab_hash() == hashlib.sha256(fab).hexdigest()


def test_any_other_bundle_is_refused() -> None:
    other_ref = APP_PYPROJECT.replace(CLIENTAPP_REF, "os:system")
    with_code = {"pyproject.toml": APP_PYPROJECT.encode(), "extra.py": b"print(1)\n"}
    for fab in (build_fab({"pyproject.toml": other_ref.encode()}), build_fab(with_code)):
        reason = fab_refusal(fab)
        assert reason is not None and "refused" in reason


def test_node_config_quoting_matches_flower(tmp_path: Path) -> None:
    from flwr.common.config import parse_config_args

    (tmp_path / "dir with space").mkdir()
    path = _node_file(tmp_path / "dir with space", "h1")
    assert parse_config_args([node_config_arg(path)]) == {"healthfed-node": str(path)}
    with pytest.raises(FederationError):
        node_config_arg(tmp_path / "it's.toml")


def test_tls_files_are_private(tmp_path: Path) -> None:
    files = generate_loopback_tls(tmp_path / "tls")
    for p in (files.ca_cert, files.server_cert, files.server_key):
        assert stat.S_IMODE(p.stat().st_mode) == 0o600


# --- one real 2-site deployment ----------------------------------------------------------
@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFlowerDeployment]:
    root = tmp_path_factory.mktemp("flower")
    nodes = [_node_file(root, "site_a"), _node_file(root, "site_b")]
    dep = LocalFlowerDeployment(
        nodes, work_dir=root / "work", clientapp_ref=ECHO_APP, node_pythonpath=[TESTS]
    )
    try:
        dep.start()
        yield dep
    finally:
        dep.close()


@pytest.mark.flower
def test_round_trip_reaches_both_sites_over_tls_on_loopback(
    deployment: LocalFlowerDeployment,
) -> None:
    request = {"computation": "echo", "params": {"k": 1}, "expected_sites": ["site_a", "site_b"]}
    result = deployment.run(request, timeout=30)
    assert sorted(result["replies"]) == ["site_a", "site_b"]
    assert result["replies"]["site_b"]["result"] == {"echo": {"k": 1}}
    assert result["missing"] == [] and result["unanswered_nodes"] == 0
    assert deployment.last_round_s is not None and deployment.last_round_s < 30
    # TLS everywhere, nothing insecure, every listening socket on 127.0.0.1 only.
    assert (
        "Uvicorn running on https://127.0.0.1"
        in deployment.work_dir.joinpath("logs", "superlink.log").read_text()
    )
    assert not any("--insecure" in p.popen.args for p in deployment._procs)
    listening = listening_addresses(process_tree(p.popen.pid for p in deployment._procs))
    assert listening, "found no listening sockets"
    assert all(addr.startswith("0100007F:") for addr in listening), listening


@pytest.mark.flower
def test_nodes_share_the_cores_for_blas(deployment: LocalFlowerDeployment) -> None:
    """Every node process gets BLAS thread limits: the cores shared among the local nodes
    (unless the caller's environment sets them), so 2+ nodes do not oversubscribe."""
    import os

    from healthfed.federation.deploy.processes import BLAS_THREAD_VARS, blas_thread_env

    preset = [v for v in BLAS_THREAD_VARS if v in os.environ]
    expected = str(max(1, (os.cpu_count() or 1) // 2))
    nodes = [p for p in deployment._procs if p.role.startswith("supernode-")]
    assert len(nodes) == 2
    for proc in nodes:
        raw = Path(f"/proc/{proc.popen.pid}/environ").read_bytes().split(b"\0")
        env = dict(kv.decode().split("=", 1) for kv in raw if b"=" in kv)
        for var in BLAS_THREAD_VARS:
            assert env.get(var) == (os.environ[var] if preset else expected), (var, env.get(var))
    superlink = next(p for p in deployment._procs if p.role == "superlink")
    raw = Path(f"/proc/{superlink.popen.pid}/environ").read_bytes()
    assert preset or b"OPENBLAS_NUM_THREADS" not in raw  # only the nodes are limited
    assert blas_thread_env(None) == {}


@pytest.mark.flower
def test_pushed_app_with_other_code_is_refused_and_never_runs(
    deployment: LocalFlowerDeployment, tmp_path: Path
) -> None:
    marker = tmp_path / "PWNED"
    evil_module = (
        "from pathlib import Path\n"
        f"Path({str(marker)!r}).write_text('module imported')\n"
        "from flwr.clientapp import ClientApp\n"
        "app = ClientApp()\n"
        "@app.query()\n"
        "def query(msg, context):\n"
        f"    Path({str(marker)!r}).write_text('handler ran')\n"
        "    raise SystemExit\n"
    )
    pyproject = APP_PYPROJECT.replace(CLIENTAPP_REF, "healthfed_evil:app").replace(
        "healthfed-query", "healthfed-query-evil"
    )
    fab = build_fab(
        {"pyproject.toml": pyproject.encode(), "healthfed_evil.py": evil_module.encode()}
    )
    out = tmp_path / "result.json"
    run_id = deployment.start_run(
        {
            "healthfed-request": '{"computation": "echo", "timeout": 15}',
            "healthfed-result": str(out),
        },
        fab=fab,
    )
    status = deployment.wait_run(run_id, timeout=60)
    assert status[:2] == ("finished", "completed"), status
    import json

    result = json.loads(out.read_text())
    assert result["replies"] == {} and result["unanswered_nodes"] == 2  # error replies only
    logs = deployment.node_logs()
    assert all("REFUSED run" in text for text in logs.values()), logs
    assert not marker.exists()
    # ...and the deployment still serves the genuine app afterwards.
    again = deployment.run({"computation": "echo", "params": {}}, timeout=30)
    assert sorted(again["replies"]) == ["site_a", "site_b"]


@pytest.mark.flower
def test_close_stops_every_process(deployment: LocalFlowerDeployment) -> None:
    pids = process_tree(p.popen.pid for p in deployment._procs)
    assert len(pids) >= 6  # SuperLink, SuperExec, 2 SuperNodes, 2 node executors
    deployment.close()
    assert not [pid for pid in pids if alive(pid)]


@pytest.mark.flower
def test_federation_flower_runs_the_installed_client_app_on_real_nodes(tmp_path: Path) -> None:
    """End to end: synthetic hospitals, the installed ClientApp, a pooled count."""
    try:
        from healthfed.demo import prepare_nodes
        from healthfed.federation.federation import Federation

        nodes = prepare_nodes(tmp_path, sites=2, rows=200, seed=1)
    except ImportError as exc:  # the node/data side is developed in parallel
        pytest.skip(f"node side not importable yet: {exc}")
    fed = Federation.flower(nodes, timeout=30)
    try:
        # Ready means ready: start() returned only once the session ServerApp serves.
        started = fed._on_close.__self__  # type: ignore[union-attr]
        assert started._session is not None and started._session.serving()
        # Each data worker checked its node's datasets before it said ready.
        assert all("node datasets checked" in log for log in started.node_logs().values())
        outcome = fed.round("count", "covid")
        again = fed.round("count", "covid")
        # Both rounds went to one long-running ServerApp (one Flower run, a session).
        deployment = fed._on_close.__self__  # type: ignore[union-attr]
        session = deployment._session
        assert session is not None and session.alive
        assert deployment.run_status(session.run_id)[0] == "running"
        assert deployment.last_round_s < 15
        # A session whose ServerApp has gone (as after its idle timeout: the hub still
        # believes it open) is replaced, not failed.
        session.stop()
        deployment.wait_run(session.run_id, timeout=30)
        session.alive = True
        third = fed.round("count", "covid")
        assert third.contributed == outcome.contributed
        assert deployment._session is not session and deployment._session.alive
    finally:
        fed.close()
    assert outcome.contributed == ["hospital_1", "hospital_2"], (outcome.refused, outcome.missing)
    assert again.contributed == outcome.contributed
    assert not session.alive
