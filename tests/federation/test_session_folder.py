"""The session ServerApp's folder protocol, without Flower processes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from healthfed.federation.grids.session import ServerAppSession
from healthfed.federation.messages import SESSION_CLOSE, SESSION_SERVING
from healthfed.federation.server_app import serve_session


class _Control:
    """A RunControl that records what the session asks (no SuperLink)."""

    def __init__(self) -> None:
        self.started: list[dict[str, Any]] = []

    def start_run(self, run_config: dict[str, Any], fab: bytes | None = None) -> int:
        self.started.append(run_config)
        return 7

    def run_status(self, run_id: int) -> tuple[str, str, str]:
        return ("running", "", "")


def test_a_session_is_serving_only_once_its_server_app_reads_requests(tmp_path: Path) -> None:
    session = ServerAppSession(_Control(), tmp_path)  # type: ignore[arg-type]
    assert not session.serving()  # the run is started, its ServerApp not yet
    (tmp_path / SESSION_CLOSE).write_text("", encoding="utf-8")
    serve_session(grid=None, folder=tmp_path)  # type: ignore[arg-type]  # closed: no request
    assert (tmp_path / SESSION_SERVING).exists()
    assert session.serving()
