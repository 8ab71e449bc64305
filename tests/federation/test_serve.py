"""The hub and the hospitals as separately started services (flwr 1.42, loopback).

``serve_superlink`` (the access body's) and two ``serve_node`` handles are started
independently, as they would be on different machines, and meet only through the
SuperLink's address and its ``ca.pem``. Every process is stopped at the end and checked gone.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from _proc_helpers import alive, listening_addresses, process_tree

from healthfed.errors import FederationError
from healthfed.federation.deploy import (
    certificate_names,
    free_port,
    generate_superlink_tls,
    nginx_fleet_location,
    run_on_superlink,
    serve_node,
    serve_superlink,
)
from healthfed.federation.deploy.processes import descendants


# --- no processes -----------------------------------------------------------------------
def test_hub_refuses_a_non_loopback_bind_without_acknowledgement(tmp_path: Path) -> None:
    with pytest.raises(FederationError, match="/v1/fleet/"):
        serve_superlink(tmp_path / "hub", host="0.0.0.0", port=0)
    assert not (tmp_path / "hub").exists()


def test_hub_certificate_names_the_public_host_and_loopback(tmp_path: Path) -> None:
    files = generate_superlink_tls(tmp_path / "tls", ["hub.example.org", "10.0.0.5"])
    assert certificate_names(files.server_cert) >= {
        "hub.example.org",
        "10.0.0.5",
        "127.0.0.1",
        "localhost",
    }
    for p in (files.ca_cert, files.server_cert, files.server_key):
        assert stat.S_IMODE(p.stat().st_mode) == 0o600


def test_hub_rejects_a_given_certificate_that_does_not_name_the_public_host(
    tmp_path: Path,
) -> None:
    generate_superlink_tls(tmp_path / "pki", ["other.example.org"])
    with pytest.raises(FederationError, match="hub.example.org"):
        serve_superlink(
            tmp_path / "hub", port=0, fleet_public_host="hub.example.org", tls_dir=tmp_path / "pki"
        )


# --- one hub, two hospitals, each its own handle -------------------------------------------
@pytest.mark.flower
def test_hub_and_two_hospitals_started_separately_answer_a_request(tmp_path: Path) -> None:
    from healthfed.demo import prepare_nodes

    node_files = prepare_nodes(tmp_path / "hospitals", 2, 200)
    timings: dict[str, float] = {}
    handles: list = []
    pids: set[int] = set()
    try:
        t0 = time.perf_counter()
        hub = serve_superlink(tmp_path / "hub", port=0, fleet_public_host="hub.example.org")
        handles.append(hub)
        timings["hub_start"] = time.perf_counter() - t0
        assert "hub.example.org" in certificate_names(hub.tls.server_cert)

        t0 = time.perf_counter()
        nodes = [
            serve_node(
                f,
                superlink=hub.address,
                root_certificates=hub.ca_cert,  # what the hub hands to each hospital
                work_dir=tmp_path / f"node-{i}",
            )
            for i, f in enumerate(node_files)
        ]
        handles.extend(nodes)
        timings["nodes_start"] = time.perf_counter() - t0
        secret = tmp_path / "node-0" / "home" / "supernode" / "superexec.secret"
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600

        sites = [n.site for n in nodes]
        request = {
            "computation": "count",
            "dataset": "covid",
            "params": {},
            "request_id": uuid.uuid4().hex,
            "requester": "test",
        }
        t0 = time.perf_counter()
        result = run_on_superlink(hub.address, hub.ca_cert, request, 30, sites)
        timings["round_trip"] = time.perf_counter() - t0
        assert sorted(result["replies"]) == sorted(sites), result
        assert all(r["status"] == "ok" for r in result["replies"].values()), result
        assert result["missing"] == [] and result["errors"] == {}
        assert all("answered run" in n.executor_log() for n in nodes)
        # The researcher's Federation on the hub machine: one session run, many rounds.
        from healthfed.federation.federation import Federation

        with Federation.flower_remote(hub.address, hub.ca_cert, sites, timeout=30) as fed:
            first, second = fed.round("count", "covid"), fed.round("count", "covid")
        assert first.contributed == second.contributed == sorted(sites), first.refused

        pids = process_tree(pid for h in handles for pid in h.pids)
        listening = listening_addresses(pids)
        assert listening and all(a.startswith("0100007F:") for a in listening), listening
        flower_args = [p.popen.args for h in handles for p in h._procs]
        assert not any("--insecure" in args for args in flower_args)

        # Supervision: a hospital's SuperNode dies -> wait raises; its data worker
        # (spawned by the SuperNode) reads end-of-file and leaves too.
        victim = nodes[1]
        supernode = next(p for p in victim._procs if p.role == "supernode")
        tree = process_tree([supernode.popen.pid])
        assert len(tree) >= 2, tree  # the SuperNode and its one worker
        os.kill(supernode.popen.pid, signal.SIGKILL)
        with pytest.raises(FederationError, match="supernode exited"):
            victim.wait(timeout=15)
        assert all(p.popen.poll() is not None for p in victim._procs)
        deadline = time.monotonic() + 30
        while any(alive(pid) for pid in tree) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in tree if alive(pid)]
        assert hub.running() and nodes[0].running()

        t0 = time.perf_counter()
        for h in reversed(handles):
            h.stop()
        timings["stop"] = time.perf_counter() - t0
    finally:
        for h in reversed(handles):
            h.stop()
    print("timings (s):", {k: round(v, 2) for k, v in timings.items()})
    time.sleep(0.2)
    assert not [pid for pid in pids if alive(pid)]


def _nginx_conf(
    root: Path, listen: str, server_cert: Path, server_key: Path, locations: str
) -> Path:
    conf = root / "nginx.conf"
    temp = "\n".join(
        f"  {kind}_temp_path {root}/tmp-{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    body = "\n".join("    " + line for line in locations.splitlines())
    conf.write_text(
        f"daemon off;\npid {root}/nginx.pid;\nerror_log {root}/error.log;\nevents {{}}\n"
        f"http {{\n  access_log {root}/access.log;\n{temp}\n  server {{\n"
        f"    listen {listen} ssl;\n    ssl_certificate {server_cert};\n"
        f"    ssl_certificate_key {server_key};\n{body}\n  }}\n}}\n"
    )
    return conf


@pytest.mark.flower
@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")
def test_hospitals_reach_the_hub_only_through_a_fleet_only_proxy(tmp_path: Path) -> None:
    """The documented nginx rule: /v1/fleet/ passes, Control/Runtime API paths do not."""
    import httpx

    from healthfed.demo import prepare_nodes

    node_files = prepare_nodes(tmp_path / "hospitals", 2, 200)
    handles: list = []
    proxy = None
    try:
        hub = serve_superlink(tmp_path / "hub", port=0, fleet_public_host="localhost")
        handles.append(hub)
        listen = f"127.0.0.1:{free_port()}"
        (tmp_path / "proxy").mkdir()
        conf = _nginx_conf(
            tmp_path / "proxy",
            listen,
            hub.tls.server_cert,
            hub.tls.server_key,
            nginx_fleet_location(hub.address, hub.ca_cert),
        )
        proxy = subprocess.Popen(
            ["nginx", "-c", str(conf), "-p", str(tmp_path / "proxy")], start_new_session=True
        )
        public = f"localhost:{listen.rsplit(':', 1)[1]}"
        with httpx.Client(verify=str(hub.ca_cert)) as client:
            deadline = time.monotonic() + 10
            while True:
                try:
                    client.get(f"https://{public}/")
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, tmp_path / "proxy" / "error.log"
                    time.sleep(0.1)
            for path in ("/v1/control/list-nodes", "/v1/runtime/get-nodes", "/health", "/docs"):
                assert client.post(f"https://{public}{path}").status_code == 404, path
        nodes = [serve_node(f, superlink=public, root_certificates=hub.ca_cert) for f in node_files]
        handles.extend(nodes)
        sites = [n.site for n in nodes]
        request = {"computation": "count", "dataset": "covid", "params": {}}
        result = run_on_superlink(hub.address, hub.ca_cert, request, 30, sites)
        assert sorted(result["replies"]) == sorted(sites), result
        seen = (tmp_path / "proxy" / "access.log").read_text()
        assert "/v1/fleet/pull-messages" in seen and "/v1/fleet/push-messages" in seen
    finally:
        for h in reversed(handles):
            h.stop()
        if proxy is not None:
            os.killpg(proxy.pid, signal.SIGTERM)
            proxy.wait(timeout=10)


@pytest.mark.flower
def test_serve_forever_stops_everything_on_sigterm(tmp_path: Path) -> None:
    """What `healthfed hub serve` does: block, and on SIGTERM stop the SuperLink and its children."""
    import sys

    code = (
        "import sys\n"
        "from healthfed.federation.deploy import serve_superlink\n"
        "hub = serve_superlink(sys.argv[1], port=0)\n"
        "hub.serve_forever(on_ready=lambda: print('ready', flush=True))\n"
        "print('stopped', flush=True)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path / "hub")],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    pids: set[int] = set()
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        pids = set(descendants(proc.pid))
        assert pids  # the SuperLink and its SuperExec
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0 and "stopped" in out
        time.sleep(0.2)
        assert not [pid for pid in pids if alive(pid)]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for pid in pids:  # never leave a SuperLink behind, even when the test failed
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
