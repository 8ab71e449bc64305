"""A node's governance settings: which hubs it trusts, where it keeps its state.

In the node TOML (paths relative to the node file)::

    [governance]
    trusted_hub_keys = ["../hub/hub_public_key.txt"]   # files or base64 Ed25519 keys
    accepted_purposes = ["scientific_research", "public_health"]  # default: all six
    state_dir = "hospital_1.state"       # default: "<node file stem>.state"
    audit_log = "hospital_1.state/audit.jsonl"          # default: state_dir/audit.jsonl
    optout_store = "hospital_1.state/optouts.sqlite"    # default: state_dir/optouts.sqlite
    approvals = "hospital_1.state/approvals.sqlite"     # default: state_dir/approvals.sqlite

    [approval]            # per computation: "auto" or "manual"
    default = "auto"
    table1 = "manual"

A node whose file has a ``[governance]`` table is *governed*: every request must
carry a permit signed by a trusted hub. A node without one is an ungoverned
sandbox (synthetic data only; it says so in a warning).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from healthfed.errors import PermitError, PolicyError
from healthfed.governance.keys import key_id, load_public_key
from healthfed.governance.purposes import Purpose

__all__ = ["APPROVAL_MODES", "NodeGovernance"]

APPROVAL_MODES = ("auto", "manual")
ALL_PURPOSES = tuple(p.value for p in Purpose)
_GOV_FIELDS = {
    "trusted_hub_keys",
    "accepted_purposes",
    "state_dir",
    "audit_log",
    "optout_store",
    "approvals",
}


@dataclass
class NodeGovernance:
    """Governance of one node (see the module doc for the TOML form).

    Parameters
    ----------
    trusted_keys
        Key id -> Ed25519 public key of every hub whose permits the node accepts.
    state_dir
        Folder of the node's audit log, opt-outs and approval queue.
    accepted_purposes
        EHDS Art. 53(1) purpose codes the site accepts.
    approval
        Computation name -> ``"auto"`` / ``"manual"``; ``approval_default`` for the rest.
    """

    trusted_keys: dict[str, Ed25519PublicKey]
    state_dir: Path
    accepted_purposes: tuple[str, ...] = ALL_PURPOSES
    approval: dict[str, str] = field(default_factory=dict)
    approval_default: str = "auto"
    audit_log: Path | None = None
    optout_store: Path | None = None
    approvals: Path | None = None

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir)
        self.audit_log = Path(self.audit_log or self.state_dir / "audit.jsonl")
        self.optout_store = Path(self.optout_store or self.state_dir / "optouts.sqlite")
        self.approvals = Path(self.approvals or self.state_dir / "approvals.sqlite")
        bad = sorted(set(self.accepted_purposes) - set(ALL_PURPOSES))
        if bad:
            raise PolicyError(
                f"accepted_purposes {bad} are not EHDS Art. 53(1) purposes {list(ALL_PURPOSES)}"
            )
        for comp, mode in {**self.approval, "default": self.approval_default}.items():
            if mode not in APPROVAL_MODES:
                raise PolicyError(f"[approval] {comp} = {mode!r}: use 'auto' or 'manual'")

    def approval_mode(self, computation: str) -> str:
        return self.approval.get(computation, self.approval_default)

    @classmethod
    def from_tables(
        cls,
        governance: Mapping[str, Any],
        approval: Mapping[str, Any] | None,
        base_dir: Path,
        default_state_dir: str,
        source: str,
    ) -> NodeGovernance:
        """Build from a node file's ``[governance]`` and ``[approval]`` tables."""
        unknown = sorted(set(governance) - _GOV_FIELDS)
        if unknown:
            raise PolicyError(
                f"{source} [governance]: unknown field(s) {unknown}; known: {sorted(_GOV_FIELDS)}"
            )
        specs = governance.get("trusted_hub_keys", [])
        if not isinstance(specs, list) or not all(isinstance(s, str) for s in specs):
            raise PolicyError(f"{source} [governance].trusted_hub_keys must be a list of strings")
        keys: dict[str, Ed25519PublicKey] = {}
        for spec in specs:
            try:
                key = load_public_key(spec, base_dir)
            except PermitError as exc:
                raise PolicyError(f"{source} [governance].trusted_hub_keys: {exc}") from None
            keys[key_id(key)] = key
        purposes = governance.get("accepted_purposes", list(ALL_PURPOSES))
        if not isinstance(purposes, list):
            raise PolicyError(f"{source} [governance].accepted_purposes must be a list")

        def path(name: str, default: Path) -> Path:
            value = governance.get(name)
            if value is None:
                return default
            if not isinstance(value, str):
                raise PolicyError(f"{source} [governance].{name} must be a path string")
            return (base_dir / value).resolve()

        state = path("state_dir", base_dir / default_state_dir)
        approval = dict(approval or {})
        default = approval.pop("default", "auto")
        try:
            return cls(
                trusted_keys=keys,
                state_dir=state,
                accepted_purposes=tuple(str(p) for p in purposes),
                approval={str(k): str(v) for k, v in approval.items()},
                approval_default=str(default),
                audit_log=path("audit_log", state / "audit.jsonl"),
                optout_store=path("optout_store", state / "optouts.sqlite"),
                approvals=path("approvals", state / "approvals.sqlite"),
            )
        except PolicyError as exc:
            raise PolicyError(f"{source}: {exc}") from None
