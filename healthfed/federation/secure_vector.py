"""A node's disclosed statistics as one vector for SecAgg+ to mask, and the sum back.

Both ends of a secure round use this: the node flattens what its disclosure filter
released (:func:`flatten_release`), the aggregator turns the unmasked sum into one
reply in the node's format (:func:`unflatten_total`). The layout (names, shapes,
public facts) is the same at every site for the same request and travels in the
clear; only the vector is masked.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from healthfed.errors import FederationError
from healthfed.privacy import secagg


def flatten_release(computation: str, disclosed: dict[str, Any]) -> tuple[dict, np.ndarray]:
    """``(layout, vector)`` of a node's disclosed statistics, weighted for summation.

    ``layout`` (names, shapes, public facts) is the same at every site for the same
    request and travels in the clear; ``vector`` is what SecAgg+ masks.
    """
    weighting = secagg.secure_weighting(computation)
    parts: list[np.ndarray] = []
    entries: list[list[Any]] = []
    if disclosed.get("format") == "healthfed.dp/1":
        values = dict(disclosed["values"])
        n = 1.0
        if weighting == "rows" and "n_rows" in values:
            # A noisy count can be < 1; the clear path weights by max(n, 1) too.
            n = values["n_rows"] = max(float(values["n_rows"]), 1.0)
        for name in sorted(values):
            a = np.asarray(values[name], dtype=float)
            scale = 1.0 if name == "n_rows" else n
            entries.append(["values", name, list(a.shape)])
            parts.append((a * scale).ravel())
        layout = {
            "format": "healthfed.dp/1",
            "weighting": weighting,
            "entries": entries,
            "public": disclosed.get("public", {}),
            "computation": disclosed.get("computation", computation),
        }
    else:
        n = int(disclosed["n_rows"])
        w = float(n) if weighting == "rows" else 1.0
        entries.append(["n_rows", "n_rows", []])
        parts.append(np.array([float(n)]))
        for name in sorted(disclosed.get("arrays", {})):
            spec = disclosed["arrays"][name]
            entries.append(["arrays", name, list(spec["shape"])])
            parts.append(np.asarray(spec["data"], dtype=float) * w)
        for section in ("scalars", "counts"):
            for name in sorted(disclosed.get(section, {})):
                a = np.asarray(disclosed[section][name], dtype=float)
                entries.append([section, name, list(a.shape)])
                parts.append(a.ravel())
        layout = {"format": "model_statistics", "weighting": weighting, "entries": entries}
    vector = np.concatenate(parts) if parts else np.zeros(0)
    return layout, vector


def unflatten_total(layout: dict[str, Any], total: np.ndarray) -> dict[str, Any]:
    """The pooled statistics as one reply in the node's disclosed format.

    With ``rows`` weighting the arrays come back divided by the pooled row count
    (the row-weighted mean), so code written for per-site replies reads the
    secure aggregate as one site's reply.
    """
    pos, pieces = 0, {}
    for section, name, shape in layout["entries"]:
        size = int(np.prod(shape)) if shape else 1
        pieces[(section, name)] = total[pos : pos + size].reshape(shape)
        pos += size
    if pos != total.size:
        raise FederationError("secure aggregation: the sum does not match its layout")
    rows = layout["weighting"] == "rows"
    if layout["format"] == "healthfed.dp/1":
        n = float(pieces.get(("values", "n_rows"), np.array(1.0)))
        values = {}
        for (_, name), a in pieces.items():
            v = a if name == "n_rows" or not rows else a / max(n, 1.0)
            values[name] = v.tolist()
        return {
            "format": "healthfed.dp/1",
            "computation": layout.get("computation"),
            "values": values,
            "public": layout.get("public", {}),
        }
    n_rows = int(round(float(pieces[("n_rows", "n_rows")])))
    out: dict[str, Any] = {
        "kind": "model_statistics",
        "n_rows": n_rows,
        "arrays": {},
        "scalars": {},
        "counts": {},
    }
    for (section, name), a in pieces.items():
        if section == "arrays":
            data = a / n_rows if rows and n_rows else a
            out["arrays"][name] = {"shape": list(a.shape), "data": data.ravel().tolist()}
        elif section == "scalars":
            out["scalars"][name] = float(a)
        elif section == "counts":
            out["counts"][name] = [int(round(float(v))) for v in a.ravel()]
    return out
