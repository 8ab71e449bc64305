"""The node: a hospital's datasets plus its site policy, answering vetted requests.

A request is data, never code: it names one of healthfed's registered
computations, a dataset and parameters. The node looks the computation up in
its own installed registry, validates the parameters against its policy,
runs it over its local data in DuckDB and passes the result through its
disclosure filter. Only that filtered dict leaves the node.

A node is described by one TOML file the data steward owns::

    [node]
    name = "hospital_1"

    [policy]                 # optional; defaults are the safe ones
    min_cell_count = 5

    [[datasets]]
    descriptor = "covid.toml"   # relative to this file
"""

from __future__ import annotations

import logging
import os
import threading
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from healthfed.errors import DataError, HealthfedError, PolicyDenied, PolicyError, PrivacyError
from healthfed.node.policy import SitePolicy

log = logging.getLogger(__name__)

REQUEST_FIELDS = {"computation", "dataset", "params", "request_id", "requester"}


@dataclass
class Node:
    """One hospital node: named datasets and the site's policy.

    Parameters
    ----------
    name
        The site's name as the hub and results show it.
    datasets
        ``NodeDataset`` objects by dataset name. They are opened lazily, per request.
    policy
        The site's disclosure policy.
    """

    name: str
    datasets: dict[str, Any]
    policy: SitePolicy = field(default_factory=SitePolicy)

    @classmethod
    def from_toml(cls, path: str | Path) -> Node:
        """Build a node from its TOML file; errors name the file and field."""
        from healthfed.data.dataset import NodeDataset

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
        cache = (path.parent / cache_dir) if cache_dir else None
        entries = raw.get("datasets", [])
        if not isinstance(entries, list) or not entries:
            raise PolicyError(f"{path}: declare at least one [[datasets]] entry")
        datasets: dict[str, Any] = {}
        for i, entry in enumerate(entries):
            desc = entry.get("descriptor") if isinstance(entry, dict) else None
            if not isinstance(desc, str):
                raise PolicyError(f"{path}: [[datasets]] entry {i} needs a 'descriptor' path")
            ds = NodeDataset.from_descriptor_file(path.parent / desc, cache_dir=cache)
            if ds.name in datasets:
                raise PolicyError(f"{path}: dataset name {ds.name!r} declared twice")
            datasets[ds.name] = ds
        return cls(name=name, datasets=datasets, policy=policy)

    def dataset(self, name: str) -> Any:
        try:
            return self.datasets[name]
        except KeyError:
            raise PolicyDenied(
                f"site {self.name!r} holds no dataset {name!r}; it holds {sorted(self.datasets)}"
            ) from None

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        """Answer one request; never raises, never returns rows.

        The reply is ``{"site", "status": "ok", "result"}`` on success, or
        ``{"site", "status": "refused", "reason"}`` when the policy, the data or
        the disclosure filter stopped it. Unexpected failures are reported as
        ``"error"`` without their traceback (it could quote data).
        """
        base = {"site": self.name, "request_id": request.get("request_id")}
        try:
            result = self._run(request)
        except (PolicyDenied, PrivacyError, DataError, PolicyError) as exc:
            log.info("site %s refused request: %s", self.name, exc)
            return {**base, "status": "refused", "reason": str(exc), "kind": type(exc).__name__}
        except HealthfedError as exc:
            return {**base, "status": "error", "reason": str(exc), "kind": type(exc).__name__}
        except Exception as exc:  # noqa: BLE001 - a node must answer, and must not leak
            log.exception("site %s failed on a request", self.name)
            return {
                **base,
                "status": "error",
                "reason": f"internal error at site {self.name!r} ({type(exc).__name__})",
                "kind": type(exc).__name__,
            }
        return {**base, "status": "ok", "result": result}

    def _run(self, request: dict[str, Any]) -> dict[str, Any]:
        from healthfed.compute import get_computation
        from healthfed.privacy.disclosure import disclose
        from healthfed.privacy.model_release import ModelStatistics, disclose_model_statistics

        if not isinstance(request, dict):
            raise PolicyDenied("a request must be a JSON object")
        unknown = sorted(set(request) - REQUEST_FIELDS)
        if unknown:
            raise PolicyDenied(f"request has unknown field(s) {unknown}")
        name = request.get("computation")
        if not isinstance(name, str):
            raise PolicyDenied("request field 'computation' must name a registered computation")
        computation = get_computation(name)
        dataset = self.dataset(str(request.get("dataset")))
        params = request.get("params") or {}
        if not isinstance(params, dict):
            raise PolicyDenied("request field 'params' must be an object")
        params = computation.validate(params, dataset.descriptor, self.policy)
        with _connection(dataset) as con:
            release = computation.run(con, dataset.descriptor, params, self.policy)
        # The node, not the computation, applies the filter; each release type has one.
        if isinstance(release, ModelStatistics):
            return disclose_model_statistics(release, self.policy)
        return disclose(release, self.policy)


class _connection:
    """Open a dataset's DuckDB connection for one request and always close it."""

    def __init__(self, dataset: Any) -> None:
        self._dataset = dataset

    def __enter__(self) -> Any:
        self._con = self._dataset.connect()
        return self._con

    def __exit__(self, *exc: object) -> None:
        self._con.close()


_cache_lock = threading.Lock()
_node_cache: dict[str, Node] = {}


def load_node(path: str | Path) -> Node:
    """A node from its TOML file, cached per path so data loads lazily and once."""
    key = str(Path(path).resolve())
    with _cache_lock:
        if key not in _node_cache:
            _node_cache[key] = Node.from_toml(key)
        return _node_cache[key]


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def write_node_file(
    path: str | Path,
    name: str,
    descriptors: list[str | Path],
    policy: SitePolicy | None = None,
) -> Path:
    """Write a node TOML (name, policy, dataset descriptors) for a data steward to edit.

    Descriptor paths are written relative to the node file, so the folder holding
    both can be moved as a whole.
    """
    path = Path(path).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["[node]", f"name = {_toml_value(name)}", "", "[policy]"]
    for key, value in (policy or SitePolicy()).to_dict().items():
        lines.append(f"{key} = {_toml_value(value)}")
    for desc in descriptors:
        rel = os.path.relpath(Path(desc).resolve(), path.parent)
        lines += ["", "[[datasets]]", f"descriptor = {_toml_value(rel)}"]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path
