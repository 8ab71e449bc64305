"""The SuperLink's Control API, from healthfed's side: start runs, follow them, stop them.

A healthfed round on a deployment is one Flower run of the one app bundle
(:mod:`~healthfed.federation.deploy.bundle`): the request travels in the run
config and the ServerApp writes its result to a file on the SuperLink's machine
(:meth:`SuperLinkControl.run`), or a session run serves many requests
(:class:`~healthfed.federation.grids.session.ServerAppSession`).
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from flwr.common.serde import fab_to_proto, user_config_to_proto
from flwr.proto.control_pb2 import (
    ListNodesRequest,
    ListRunsRequest,
    StartRunRequest,
    StopRunRequest,
)
from flwr.supercore.fab import Fab

from healthfed.errors import FederationError, NodeTimeout
from healthfed.federation.deploy.bundle import app_fab
from healthfed.federation.grids.session import RUN_OVERHEAD_S
from healthfed.federation.messages import REQUEST_KEY, RESULT_KEY, TIMEOUT_FIELD


class SuperLinkControl:
    """Control API client of a running SuperLink: start healthfed runs, follow them.

    Shared by :class:`~healthfed.federation.deploy.local.LocalFlowerDeployment`, the
    SuperLink machine's :class:`~healthfed.federation.deploy.superlink.SuperLinkServer`
    and the researcher there (:mod:`healthfed.federation.deploy.remote`); it is the
    :class:`~healthfed.federation.grids.session.RunControl` of a session. The
    open-source Control API has no login: whoever reaches it may start runs, which
    is why the SuperLink is bound to loopback/an internal address.

    Parameters
    ----------
    address
        The SuperLink's ``host:port`` (Fleet, Control and Runtime share it).
    root_certificates
        CA certificate (path or PEM bytes) the SuperLink's certificate chains to.
    diagnostics
        Returns text appended to errors (e.g. the SuperLink's log tail).
    check_alive
        Raises if the SuperLink process is known to be dead (local deployments).
    """

    def __init__(
        self,
        address: str,
        root_certificates: str | Path | bytes,
        *,
        diagnostics: Callable[[], str] | None = None,
        check_alive: Callable[[], None] | None = None,
    ) -> None:
        # flwr's HTTP clients cost ~0.3 s to import; only a deployment needs them.
        from flwr.supercore.control.control_http_client import ControlHttpClient
        from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor

        ca = (
            root_certificates
            if isinstance(root_certificates, bytes)
            else Path(root_certificates).read_bytes()
        )
        self.address = address
        self._diagnose = diagnostics or (lambda: "")
        self._alive_check = check_alive or (lambda: None)
        self.last_round_s: float | None = None
        self._client: Any = ControlHttpClient.from_server_address(
            server_address=address,
            insecure=False,
            root_certificates=ca,
            interceptors=[RuntimeVersionHttpInterceptor(component_name="flwr CLI")],
        )

    def close(self) -> None:
        try:
            self._client.close()
        except Exception:  # noqa: BLE001 - closing must not fail
            pass

    def diagnostics(self) -> str:
        """Text to append to errors (e.g. the SuperLink's log tail); may be empty."""
        return self._diagnose()

    def check_alive(self) -> None:
        """Raise if the SuperLink process is known to be dead (local deployments)."""
        self._alive_check()

    def stop_run(self, run_id: int) -> None:
        """Ask the SuperLink to stop a run; a failure to ask is ignored (best effort)."""
        try:
            self._client.StopRun(StopRunRequest(run_id=run_id))
        except Exception:  # noqa: BLE001
            pass

    def list_nodes(self) -> list[Any] | None:
        """The SuperLink's nodes (``ListNodes``), or ``None`` if it cannot be reached."""
        try:
            return list(self._client.ListNodes(ListNodesRequest()).nodes_info)
        except Exception:  # noqa: BLE001 - not up yet
            return None

    def online_nodes(self) -> int:
        """How many nodes are ``online`` now (0 if the SuperLink cannot be reached)."""
        return sum(1 for n in self.list_nodes() or [] if n.status == "online")

    def start_run(self, run_config: dict[str, Any], fab: bytes | None = None) -> int:
        """Push ``fab`` (default: ``app_fab()``) with run-config overrides; return the run id."""
        content = app_fab() if fab is None else fab
        proto = fab_to_proto(Fab(hashlib.sha256(content).hexdigest(), content, {}))
        try:
            res = self._client.StartRun(
                StartRunRequest(fab=proto, override_config=user_config_to_proto(run_config))
            )
        except Exception as exc:  # noqa: BLE001
            raise FederationError(
                f"SuperLink {self.address} refused to start the run: {exc}\n{self.diagnostics()}"
            ) from None
        if not res.HasField("run_id"):
            raise FederationError(
                f"SuperLink {self.address} did not start the run\n{self.diagnostics()}"
            )
        return int(res.run_id)

    def run_status(self, run_id: int) -> tuple[str, str, str]:
        """``(status, sub_status, details)`` of a run, e.g. ``("finished", "completed", "")``."""
        res = self._client.ListRuns(ListRunsRequest(run_id=run_id))
        run = res.run_dict[run_id]
        return run.status.status, run.status.sub_status, run.status.details

    def wait_run(
        self, run_id: int, timeout: float, sites: Sequence[str] = ()
    ) -> tuple[str, str, str]:
        """Poll until the run is finished or ``timeout`` passes (then the run is stopped)."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.run_status(run_id)
            if status[0] == "finished":
                return status
            self.check_alive()
            if time.monotonic() > deadline:
                self.stop_run(run_id)
                raise NodeTimeout(
                    f"run {run_id} did not finish within {timeout:g}s (status {status})\n"
                    f"{self.diagnostics()}",
                    sites=list(sites),
                )
            time.sleep(0.1)

    def run(
        self,
        request: dict[str, Any],
        timeout: float,
        result_dir: str | Path,
        sites: Sequence[str] = (),
    ) -> dict[str, Any]:
        """Run the healthfed ServerApp once with ``request``; return its result JSON.

        The request travels in the run config (``healthfed-request``, JSON); the
        ServerApp, which the SuperLink starts on its own machine, writes
        ``collect``'s dict to ``healthfed-result``, a file in ``result_dir``: so
        ``result_dir`` must be writable by the SuperLink's user on that machine.
        """
        envelope = dict(request)
        envelope.setdefault(TIMEOUT_FIELD, timeout)
        out = Path(result_dir).resolve() / f"{uuid.uuid4().hex}.json"
        started = time.perf_counter()
        run_id = self.start_run(
            {REQUEST_KEY: json.dumps(envelope, allow_nan=False), RESULT_KEY: str(out)}
        )
        status, sub_status, details = self.wait_run(run_id, float(timeout) + RUN_OVERHEAD_S, sites)
        self.last_round_s = time.perf_counter() - started
        if sub_status != "completed" or not out.exists():
            raise FederationError(
                f"run {run_id} ended {status}:{sub_status} {details}\n{self.diagnostics()}"
            )
        try:
            result: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
        finally:
            out.unlink(missing_ok=True)
        return result
