"""A node's TOML file: reading it into its parts, and writing one for a data steward to edit.

A node is described by one TOML file the data steward owns::

    [node]
    name = "hospital_1"

    [policy]                 # optional; defaults are the safe ones
    min_cell_count = 5

    [governance]             # makes the node *governed*
    trusted_hub_keys = ["../hub/hub_public_key.txt"]

    [approval]               # per computation: "auto" (default) or "manual"
    table1 = "manual"

    [catalogue]              # optional HealthDCAT-AP metadata for `catalogue publish`
    publisher = "Hospital 1, Data Office"

    [[datasets]]
    descriptor = "covid.toml"   # relative to this file

Every error names the file and the field.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from healthfed.data.dataset import NodeDataset
from healthfed.errors import DataError, PolicyError
from healthfed.governance.node_config import NodeGovernance
from healthfed.policy import SitePolicy

__all__ = ["NodeFile", "read_node_file", "write_node_file"]


@dataclass(frozen=True)
class NodeFile:
    """The parts of a node file, ready to build a :class:`~healthfed.node.runtime.Node`."""

    name: str
    datasets: dict[str, Any]
    policy: SitePolicy = field(default_factory=SitePolicy)
    governance: NodeGovernance | None = None
    catalogue: dict[str, Any] = field(default_factory=dict)


def read_node_file(path: str | Path, dataset_errors: dict[str, str] | None = None) -> NodeFile:
    """Read and check a node's TOML file (datasets open lazily, on first use).

    ``dataset_errors``: when given, a dataset whose descriptor cannot be loaded is left
    out and its error recorded there (by descriptor path) instead of raised -- so
    ``healthfed node check`` goes on with the other datasets.
    """
    path = Path(path).resolve()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PolicyError(f"node file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{path}: not valid TOML: {exc}") from None
    node = raw.get("node", {})
    name = node.get("name")
    if not isinstance(name, str) or not name:
        raise PolicyError(f"{path}: [node].name is missing")
    policy = SitePolicy.from_dict(raw.get("policy", {}), source=f"{path} [policy]")
    cache_dir = node.get("cache_dir")
    datasets = _datasets(
        path, raw, (path.parent / cache_dir) if cache_dir else None, dataset_errors
    )
    governance = _governance(path, raw)
    catalogue = raw.get("catalogue", {})
    if not isinstance(catalogue, dict):
        raise PolicyError(f"{path}: [catalogue] must be a table")
    return NodeFile(name, datasets, policy, governance, catalogue)


def _datasets(
    path: Path, raw: dict[str, Any], cache: Path | None, errors: dict[str, str] | None = None
) -> dict[str, Any]:
    """The ``[[datasets]]`` entries as ``NodeDataset`` objects by dataset name."""
    entries = raw.get("datasets", [])
    if not isinstance(entries, list) or not entries:
        raise PolicyError(f"{path}: declare at least one [[datasets]] entry")
    datasets: dict[str, Any] = {}
    for i, entry in enumerate(entries):
        desc = entry.get("descriptor") if isinstance(entry, dict) else None
        if not isinstance(desc, str):
            raise PolicyError(f"{path}: [[datasets]] entry {i} needs a 'descriptor' path")
        try:
            ds = NodeDataset.from_descriptor_file(path.parent / desc, cache_dir=cache)
        except DataError as exc:
            if errors is None:
                raise
            errors[desc] = str(exc)
            continue
        if ds.name in datasets:
            raise PolicyError(f"{path}: dataset name {ds.name!r} declared twice")
        datasets[ds.name] = ds
    return datasets


def _governance(path: Path, raw: dict[str, Any]) -> NodeGovernance | None:
    """The ``[governance]`` and ``[approval]`` tables, or None for a sandbox node."""
    if "governance" not in raw:
        if "approval" in raw:
            raise PolicyError(f"{path}: [approval] needs a [governance] table")
        return None
    if not isinstance(raw["governance"], dict):
        raise PolicyError(f"{path}: [governance] must be a table")
    return NodeGovernance.from_tables(
        raw["governance"],
        raw.get("approval"),
        base_dir=path.parent,
        default_state_dir=f"{path.stem}.state",
        source=str(path),
    )


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def _governance_lines(
    path: Path, hub_keys: list[str | Path], approval: dict[str, str] | None
) -> list[str]:
    """``[governance]`` (key files relative to the node file) and ``[approval]`` lines."""
    keys = []
    for k in hub_keys:
        p = Path(k)
        try:
            is_file = p.is_file()
        except OSError:
            is_file = False
        keys.append(os.path.relpath(p.resolve(), path.parent) if is_file else str(k).strip())
    lines = [
        "",
        "[governance]",
        f"trusted_hub_keys = {_toml_value(keys)}",
        f"state_dir = {_toml_value(f'{path.stem}.state')}",
        "",
        "[approval]",
        'default = "auto"',
    ]
    for comp, mode in sorted((approval or {}).items()):
        lines.append(f"{comp} = {_toml_value(mode)}")
    return lines


def write_node_file(
    path: str | Path,
    name: str,
    descriptors: list[str | Path],
    policy: SitePolicy | None = None,
    hub_keys: list[str | Path] | None = None,
    approval: dict[str, str] | None = None,
) -> Path:
    """Write a node TOML (name, policy, governance, dataset descriptors) for a steward to edit.

    Descriptor paths are written relative to the node file, so the folder holding
    both can be moved as a whole.

    Parameters
    ----------
    hub_keys
        Public keys of the hubs whose permits the node accepts: files (written
        relative to the node file) or base64 text. Given (even empty), the node is
        governed and gets a ``[governance]`` table with its state folder
        ``<stem>.state``; ``None`` writes an ungoverned sandbox node.
    approval
        Computation -> ``"auto"``/``"manual"`` for the ``[approval]`` table.
    """
    path = Path(path).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["[node]", f"name = {_toml_value(name)}", "", "[policy]"]
    for key, value in (policy or SitePolicy()).to_dict().items():
        lines.append(f"{key} = {_toml_value(value)}")
    if hub_keys is not None:
        lines += _governance_lines(path, hub_keys, approval)
    elif approval:
        raise PolicyError("an [approval] table needs a governed node (give hub_keys)")
    for desc in descriptors:
        rel = os.path.relpath(Path(desc).resolve(), path.parent)
        lines += ["", "[[datasets]]", f"descriptor = {_toml_value(rel)}"]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(path)
    if hub_keys is not None:
        read_node_file(path)  # fail now, naming the file, if a key cannot be read
    return path
