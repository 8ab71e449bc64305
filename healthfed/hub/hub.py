"""The hub: the health data access body's side of healthfed.

``Hub.init(DIR)`` creates a hub folder::

    DIR/hub.toml                 name and database URL (a relative SQLite path is
                                 relative to DIR, so the folder can be moved)
    DIR/hub_signing_key.pem      the hub's Ed25519 private key (mode 0600)
    DIR/hub_public_key.txt       its public key (base64), what nodes trust
    DIR/hub.sqlite               state, unless hub.toml names another database URL
    DIR/audit.jsonl (+ .head)    the hub's hash-chained audit log
    DIR/permits/<id>.json        granted permits, signed, to hand to the permit holder

It holds the **catalogue** (node-published HealthDCAT-AP descriptions,
:mod:`~healthfed.hub.catalogue`), **data access applications** (EHDS Art. 67
fields, :mod:`~healthfed.hub.applications`), **permits** (granted by signing;
EHDS Art. 68, :mod:`~healthfed.hub.permits`), **released results** and the
**transparency register** (Art. 58, :mod:`~healthfed.hub.releases`).
Every action is appended to the audit log (and mirrored in the database).

Applications are refused automatically, and recorded as refused, when their
purpose is a prohibited use (Art. 54) or not an Art. 53(1) purpose, or when the
applicant has not declared that no prohibited use applies.

Results are *released* through :meth:`Hub.release`: the hub re-checks the
permit (its own signature, validity, not revoked, requester, computation,
datasets) and the contributing-site minimum before the researcher gets the
pooled result; a failed check withholds it and is audited.
:meth:`Hub.check_active` makes the same permit checks before a round.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Self

from healthfed.errors import HealthfedError
from healthfed.governance.keys import generate_private_key, public_key_b64, write_private_key
from healthfed.hub.releases import ReleaseDesk

__all__ = ["Hub"]


def _toml_str(value: str) -> str:
    return json.dumps(value)


DEFAULT_DB = "sqlite:///hub.sqlite"
_SQLITE = "sqlite:///"


def resolve_db_url(url: str, directory: Path) -> str:
    """``url`` with a relative SQLite path taken relative to the hub folder ``directory``.

    Hub folders written before paths were stored relative name their own database by
    its absolute path; if that file is gone but the folder has its ``hub.sqlite`` (the
    folder was moved or copied), the folder's own database is used.
    """
    if not url.startswith(_SQLITE) or url[len(_SQLITE) :] in ("", ":memory:"):
        return url
    path = Path(url[len(_SQLITE) :])
    if not path.is_absolute():
        return _SQLITE + str(directory / path)
    local = directory / "hub.sqlite"
    if path.name == "hub.sqlite" and not path.exists() and local.exists():
        return _SQLITE + str(local)
    return url


class Hub(ReleaseDesk):
    """A health data access body's hub, in a folder, with state in a SQL database.

    Use :meth:`init` to create one and :meth:`open` to open it.
    """

    CONFIG = "hub.toml"
    PUBLIC_KEY = "hub_public_key.txt"

    # --- lifecycle ---------------------------------------------------------------------------
    @classmethod
    def init(cls, directory: str | Path, name: str = "hub", db_url: str | None = None) -> Self:
        """Create a hub in ``directory`` (its key, database and audit log)."""
        directory = Path(directory).resolve()
        if (directory / cls.CONFIG).exists():
            raise HealthfedError(f"{directory} already holds a hub ({cls.CONFIG}); open it")
        directory.mkdir(parents=True, exist_ok=True)
        key = generate_private_key()
        write_private_key(key, directory / cls.KEY)
        (directory / cls.PUBLIC_KEY).write_text(public_key_b64(key) + "\n", encoding="ascii")
        url = db_url or DEFAULT_DB
        (directory / cls.CONFIG).write_text(
            f"[hub]\nname = {_toml_str(name)}\n"
            "# A relative SQLite path is relative to this folder (the folder can be moved).\n"
            f"db = {_toml_str(url)}\n",
            encoding="utf-8",
        )
        hub = cls(directory, name, resolve_db_url(url, directory))
        hub._audit("hub_init", "access body", decision="created", key_id=hub.key_id)
        return hub

    @classmethod
    def open(cls, directory: str | Path, db_url: str | None = None) -> Self:
        """Open the hub in ``directory`` (``db_url`` overrides the one in hub.toml)."""
        directory = Path(directory).resolve()
        config = directory / cls.CONFIG
        try:
            raw = tomllib.loads(config.read_text(encoding="utf-8")).get("hub", {})
        except FileNotFoundError:
            raise HealthfedError(
                f"no hub in {directory} (missing {cls.CONFIG}); create one with "
                f"`healthfed hub init {directory}`"
            ) from None
        except tomllib.TOMLDecodeError as exc:
            raise HealthfedError(f"{config}: not valid TOML: {exc}") from None
        url = db_url or str(raw.get("db", DEFAULT_DB))
        return cls(directory, str(raw.get("name", "hub")), resolve_db_url(url, directory))

    @classmethod
    def open_or_init(cls, directory: str | Path, name: str = "hub") -> Self:
        directory = Path(directory)
        if (directory / cls.CONFIG).exists():
            return cls.open(directory)
        return cls.init(directory, name=name)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def public_key(self) -> str:
        """The hub's public key, base64 (what a node's ``trusted_hub_keys`` lists)."""
        return public_key_b64(self._key)

    @property
    def public_key_path(self) -> Path:
        return self.directory / self.PUBLIC_KEY
