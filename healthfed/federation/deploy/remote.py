"""The researcher on the SuperLink's machine: rounds through an already running SuperLink.

A deployed round's ServerApp is started by the SuperLink on its own machine and
writes its result to a file there, so these run on that machine, as the
SuperLink's user: :func:`run_on_superlink` for one request (one Flower run),
:class:`SuperLinkSession` for many (one long run, ``Federation.flower_remote``).
Both go through the same :class:`~healthfed.federation.deploy.control.SuperLinkControl`
as the local deployment.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from healthfed.errors import FederationError
from healthfed.federation.deploy.commands import split_address
from healthfed.federation.deploy.control import SuperLinkControl
from healthfed.federation.grids.session import ServerAppSession


def run_on_superlink(
    address: str,
    root_certificates: str | Path,
    request: dict[str, Any],
    timeout: float,
    expected_sites: Sequence[str],
    *,
    result_dir: str | Path | None = None,
    node_wait: float = 30.0,
) -> dict[str, Any]:
    """Run one healthfed request through an already running SuperLink.

    Parameters
    ----------
    address
        The SuperLink's ``host:port`` (its Control API: loopback on its machine).
    root_certificates
        The SuperLink's ``ca.pem``.
    request
        The request envelope (``computation``, ``dataset``, ``params``, ...), as
        ``Federation.round`` builds it.
    timeout
        Seconds the ServerApp waits for node replies.
    expected_sites
        Site names that should answer; silent ones come back in ``missing``.
    result_dir
        Where the ServerApp (started by the SuperLink *on its own machine*)
        writes the result file; must be writable by the SuperLink's user.
        Default: a fresh 0700 temporary directory, removed afterwards. So this
        function runs on the SuperLink's machine, as the SuperLink's user.
    node_wait
        Seconds to wait, before starting the run, until at least
        ``len(expected_sites)`` nodes are online (the run starts anyway after).

    Returns
    -------
    dict
        ``collect``'s result: ``replies``, ``missing``, ``errors``,
        ``unanswered_nodes``, ``elapsed_s``.
    """
    envelope = dict(request)
    envelope.setdefault("expected_sites", list(expected_sites))
    control = SuperLinkControl(address, _superlink_ca(address, root_certificates))
    own = result_dir is None
    out = Path(result_dir or tempfile.mkdtemp(prefix="healthfed-run-")).resolve()
    try:
        _wait_for_nodes(control, len(expected_sites), node_wait)
        return control.run(envelope, timeout, out, list(expected_sites))
    finally:
        control.close()
        if own:
            shutil.rmtree(out, ignore_errors=True)


def _superlink_ca(address: str, root_certificates: str | Path) -> Path:
    """The CA file, checked to exist (and ``address`` to be ``HOST:PORT``)."""
    split_address(address, "SuperLink address")
    ca = Path(root_certificates).resolve()
    if not ca.is_file():
        raise FederationError(f"root certificates {ca} do not exist")
    return ca


def _wait_for_nodes(control: SuperLinkControl, expected: int, node_wait: float) -> None:
    """Wait up to ``node_wait`` s until ``expected`` nodes are online (then go on anyway)."""
    deadline = time.monotonic() + node_wait
    reached = False
    while True:
        nodes = control.list_nodes()
        if nodes is not None:
            reached = True
            if sum(n.status == "online" for n in nodes) >= expected:
                return
        if time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    if not reached:
        raise FederationError(f"cannot reach the SuperLink Control API at {control.address}")


class SuperLinkSession:
    """The researcher's rounds through a running SuperLink, in one long Flower run.

    Like :func:`run_on_superlink`, but every request of the session goes to one
    ServerApp run (:class:`~healthfed.federation.grids.session.ServerAppSession`),
    which saves the ServerApp start (~2.5 s) on every round after the first. Runs on
    the SuperLink's machine as its user: the ServerApp reads requests from, and
    writes results to, a fresh 0700 folder here (removed by :meth:`close`). What
    ``Federation.flower_remote`` uses.
    """

    def __init__(
        self,
        address: str,
        root_certificates: str | Path,
        expected_sites: Sequence[str],
        node_wait: float = 30.0,
    ) -> None:
        self.sites = list(expected_sites)
        self.node_wait = node_wait
        self._control = SuperLinkControl(address, _superlink_ca(address, root_certificates))
        self._dir = Path(tempfile.mkdtemp(prefix="healthfed-session-")).resolve()
        self._session: ServerAppSession | None = None

    def request(self, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        """One round: ``collect``'s result for ``request`` (as :func:`run_on_superlink`)."""
        envelope = dict(request)
        envelope.setdefault("expected_sites", self.sites)
        if self._session is None or not self._session.usable():
            _wait_for_nodes(self._control, len(self.sites), self.node_wait)
            folder = self._dir / uuid.uuid4().hex[:12]
            self._session = ServerAppSession(self._control, folder, self.sites)
        result: dict[str, Any] = self._session.request(envelope, timeout)
        return result

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None
        self._control.close()
        shutil.rmtree(self._dir, ignore_errors=True)
