"""Membership inference against federated models trained with and without DP-FL.

Setup: the synthetic COVID-19 cohort (``healthfed.data.synth``), ``--sites`` hospitals;
at each hospital half of the admissions are *members* (loaded into the node and used
for training) and half are *non-members* (never seen by any node). A one-hidden-layer
MLP predicting 28-day death is trained by FedAvg across in-process nodes, once in the
clear and once with DP-FL (per-patient clipping + Gaussian noise at every site,
``dp={"epsilon": --epsilon}`` = the default per-permit budget of 5, split over the
rounds in zCDP, ≤ 1 per round). The preprocessing spec comes from the *declared*
bounds (data-independent), the same for both models.

Attack: the loss-threshold membership-inference attack (Yeom et al. 2018): score a
patient by minus the model's cross-entropy on their row; AUC of members vs
non-members (0.5 = the attacker learns nothing). Utility: AUROC of 28-day death on
the non-members.

The bench policy allows ``max_param_ratio = 1.0`` (the site's choice) so the clear
model can be large enough to overfit and the attack has something to find; with the
default 0.33 the parameter/row rule alone keeps the model small.

Prints a table and, with ``--json``, one JSON object as the last line with
``membership_auc_dp``, ``membership_auc_no_dp``, ``utility_auroc_dp``,
``utility_auroc_no_dp``, the ε spent per site and the run's settings.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import healthfed.compute  # noqa: E402,F401 - registers the computations
from healthfed.compute.fedavg import FederatedMLPClassifier  # noqa: E402
from healthfed.data.dataset import NodeDataset  # noqa: E402
from healthfed.data.descriptor import descriptor_from_dict  # noqa: E402
from healthfed.data.synth import COVID_COLUMNS, covid_descriptor_toml, generate_covid_cohort  # noqa: E402
from healthfed.federation.federation import Federation  # noqa: E402
from healthfed.node.policy import SitePolicy  # noqa: E402
from healthfed.node.runtime import Node  # noqa: E402

TARGET = "death_28d"
FEATURES = [
    c
    for c, s in COVID_COLUMNS.items()
    if s["type"] in ("numeric", "binary") and c not in (TARGET, "icu", "d_dimer", "ldh")
]


def bounds_spec() -> dict[str, Any]:
    """Standardisation from the declared bounds only (no data, no privacy cost)."""
    feats = []
    for c in FEATURES:
        spec = COVID_COLUMNS[c]
        if spec["type"] == "binary":
            feats.append({"column": c, "center": 0.5, "scale": 0.5})
        else:
            lo, hi = spec["bounds"]
            feats.append({"column": c, "center": (lo + hi) / 2, "scale": (hi - lo) / 4})
    return {"features": feats}


def build(sites: int, rows: int, seed: int, policy: SitePolicy):
    raw = generate_covid_cohort(sites=sites, rows=rows, seed=seed)
    nodes, members, outsiders = [], [], []
    rng = np.random.default_rng(seed + 1)
    for k, (site, df) in enumerate(raw.items(), start=1):
        desc = descriptor_from_dict(
            tomllib.loads(covid_descriptor_toml(k, seed, rows)), base_dir=Path(".")
        )
        mask = rng.random(len(df)) < 0.5
        ds_in = NodeDataset.from_frame(df[mask].reset_index(drop=True), desc)
        ds_out = NodeDataset.from_frame(df[~mask].reset_index(drop=True), desc)
        for ds, sink in ((ds_in, members), (ds_out, outsiders)):
            con = ds.connect()
            try:
                sink.append(con.execute("SELECT * FROM data").df())
            finally:
                con.close()
        nodes.append(Node(name=site, datasets={desc.name: ds_in}, policy=policy))
    return nodes, pd.concat(members), pd.concat(outsiders), desc.name


def per_row_loss(model: Any, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    f = frame.dropna(subset=[*FEATURES, TARGET])
    z = model.decision_function(f)
    y = f[TARGET].to_numpy(dtype=float)
    loss = np.logaddexp(0.0, z) - y * z
    return loss, y


def evaluate(model: Any, members: pd.DataFrame, outsiders: pd.DataFrame) -> dict[str, float]:
    lin, yin = per_row_loss(model, members)
    lout, yout = per_row_loss(model, outsiders)
    labels = np.r_[np.ones(len(lin)), np.zeros(len(lout))]
    mia = float(roc_auc_score(labels, -np.r_[lin, lout]))
    p_out = model.predict_proba(outsiders.dropna(subset=[*FEATURES, TARGET]))[:, 1]
    return {
        "membership_auc": mia,
        "utility_auroc": float(roc_auc_score(yout, p_out)),
        "train_loss": float(lin.mean()),
        "test_loss": float(lout.mean()),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sites", type=int, default=4)
    ap.add_argument("--rows", type=int, default=600, help="admissions per site (half are members)")
    ap.add_argument("--hidden", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--lr", type=float, default=0.3)
    ap.add_argument("--epsilon", type=float, default=5.0, help="DP budget of the whole fit")
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    policy = SitePolicy(max_param_ratio=1.0)
    nodes, members, outsiders, dataset = build(args.sites, args.rows, args.seed, policy)
    spec = bounds_spec()
    results: dict[str, dict[str, float]] = {}
    timings: dict[str, float] = {}
    spent: dict[str, float] = {}
    for label, dp in (("no_dp", None), ("dp", {"epsilon": args.epsilon, "clip": args.clip})):
        model = FederatedMLPClassifier(
            hidden=args.hidden,
            rounds=args.rounds,
            local_epochs=args.epochs,
            lr=args.lr,
            batch_size=32,
            random_state=args.seed,
            dp=dp,
        )
        t0 = time.perf_counter()
        with Federation.inprocess(nodes) as fed:
            model.fit(fed, dataset, TARGET, preprocess=spec)
        timings[label] = time.perf_counter() - t0
        results[label] = evaluate(model, members, outsiders)
    for node in nodes:
        frame = node.privacy_guard.budget(policy)
        spent[node.name] = float(frame["epsilon_spent"].sum()) if len(frame) else 0.0
    rows = [
        (
            "membership AUC (loss attack)",
            results["no_dp"]["membership_auc"],
            results["dp"]["membership_auc"],
        ),
        (
            "utility AUROC (non-members)",
            results["no_dp"]["utility_auroc"],
            results["dp"]["utility_auroc"],
        ),
        ("mean loss, members", results["no_dp"]["train_loss"], results["dp"]["train_loss"]),
        ("mean loss, non-members", results["no_dp"]["test_loss"], results["dp"]["test_loss"]),
        ("time ratio (vs no DP)", 1.0, timings["dp"] / timings["no_dp"]),
    ]
    print(f"{'metric':32s} {'no DP':>10s} {'DP-FL':>10s}")
    for name, a, b in rows:
        print(f"{name:32s} {a:10.4f} {b:10.4f}")
    print("ε spent per site (DP fit): " + ", ".join(f"{s}={e:.3f}" for s, e in spent.items()))
    out = {
        "membership_auc_dp": results["dp"]["membership_auc"],
        "membership_auc_no_dp": results["no_dp"]["membership_auc"],
        "utility_auroc_dp": results["dp"]["utility_auroc"],
        "utility_auroc_no_dp": results["no_dp"]["utility_auroc"],
        "epsilon_spent_per_site": spent,
        "time_ratio_dp_vs_no_dp": timings["dp"] / timings["no_dp"],
        "settings": {k: v for k, v in vars(args).items() if k != "json"},
        "model": f"MLP hidden={args.hidden}, FedAvg, DP level=sample (per-patient clipping)",
    }
    if args.json:
        print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
