"""The one Flower App Bundle (FAB) healthfed pushes, and the check that refuses any other.

The bundle is a ``pyproject.toml`` and nothing else: it names the installed
modules (``healthfed.federation.client_app:app``, ``...server_app:app``) and
carries no Python code. It is built deterministically, so every installation of
the same healthfed and flwr versions builds the same bytes; a node's executor
compares the SHA-256 of what it was pushed with :func:`app_fab_hash` and refuses
anything else (:func:`fab_refusal`).
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

from healthfed.errors import FederationError
from healthfed.federation.messages import REQUEST_KEY, RESULT_KEY, SESSION_KEY

APP_NAME = "healthfed-query"
APP_PUBLISHER = "healthfed"
APP_VERSION = "1.0.0"
CLIENTAPP_REF = "healthfed.federation.client_app:app"
SERVERAPP_REF = "healthfed.federation.server_app:app"

APP_PYPROJECT = f"""\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "{APP_NAME}"
version = "{APP_VERSION}"
description = "healthfed query round; the code is the installed healthfed package"
dependencies = []

[tool.flwr.app]
publisher = "{APP_PUBLISHER}"

[tool.flwr.app.components]
serverapp = "{SERVERAPP_REF}"
clientapp = "{CLIENTAPP_REF}"

[tool.flwr.app.config]
{REQUEST_KEY} = "{{}}"
{RESULT_KEY} = ""
{SESSION_KEY} = ""
"""


def build_fab(files: dict[str, bytes]) -> bytes:
    """Build a Flower App Bundle from in-memory files (deterministic: fixed dates, sorted)."""
    # flwr's CLI package costs ~0.4 s to import; only building a bundle needs it.
    from flwr.cli.build import build_fab_from_files

    try:
        return build_fab_from_files(files)[0]
    except ValueError as exc:
        raise FederationError(f"cannot build the Flower app bundle: {exc}") from None


@lru_cache(maxsize=1)
def app_fab() -> bytes:
    """The one bundle healthfed pushes: a ``pyproject.toml`` naming installed modules, no code."""
    return build_fab({"pyproject.toml": APP_PYPROJECT.encode("utf-8")})


def app_fab_hash() -> str:
    """SHA-256 (hex) of ``app_fab()``; nodes accept only runs of this bundle."""
    return hashlib.sha256(app_fab()).hexdigest()


def fab_refusal(content: bytes, expected_hash: str | None = None) -> str | None:
    """Why a node refuses a pushed bundle, or ``None`` if it is the known-good one."""
    expected = expected_hash or app_fab_hash()
    got = hashlib.sha256(content).hexdigest()
    if got != expected:
        return (
            f"refused pushed Flower app: FAB sha256 {got[:16]}... is not the installed "
            f"healthfed app ({expected[:16]}...); pushed code is never run at a node"
        )
    return None
