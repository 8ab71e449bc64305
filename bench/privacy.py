"""Membership inference against federated models trained with and without DP-FL.

Setting: the synthetic COVID-19 cohort (``healthfed.data.synth``), ``--sites`` small
hospitals (default 2, the fewest the hub accepts) with ``--rows`` admissions each
(default 200). At each hospital a random half of the admissions are *members*
(loaded into the node and used for training, about 100 per site, ~90 complete cases)
and the other half *non-members* (never seen by any node). A one-hidden-layer MLP
(tanh; by default the largest hidden layer every site accepts, 5 units = 76 weights
for ~90 complete-case members, 4 units = 61 weights for 75-90) predicting 28-day
death is trained by FedAvg
across in-process nodes, once in the clear (40 rounds x 5 local epochs of mini-batch
SGD, lr 0.3, batches of 32) and once with DP-FL: per-patient clipping (norm 1) +
Gaussian noise at every site, ``dp={"epsilon": --epsilon}`` = the default per-permit
budget of 5, split over the 40 rounds in zCDP (< 1 per round) and charged to each
node's ledger, with ``--dp-epochs`` 1 noisy full-batch step per round, lr 0.3 (with
5 steps per round each step gets sqrt(5) x more noise and the DP fit was unstable:
utility AUROC 0.37 at seed 1 in a trial run; 1 step per round was chosen on DP
utility at seeds 100-104, not on the attack). Both fits go through the product
(``FederatedMLPClassifier.fit`` on ``Federation.inprocess``). The preprocessing spec
comes from the *declared* bounds (data-independent), the same for both models.

What the sites allowed: ``SitePolicy(max_param_ratio=1.0)`` - up to one model weight
per training row (the default is 0.33); every other disclosure rule is the default
(min_sites 2, min_subset 5, ε 1 per request, ε 5 per permit, δ 1e-6). Small sites
and the largest model they accept are the setting in which a model in the clear can
overfit: the parameter/row rule is checked per site, so over ``S`` equal sites the
model has at most ``1/S`` weight per pooled training row, and two sites (the fewest
the hub accepts) give the most weights per patient. (On the reported seeds four such
sites leaked about as much; see bench/RESULTS.md.)

Attack: offline LiRA (Carlini et al., "Membership Inference Attacks From First
Principles", IEEE S&P 2022) with a fixed variance. The attacker knows the training
recipe (the code is open, the hyper-parameters and ε are in the model card) and the
data *distribution*, not the members: they draw ``--shadows`` fresh cohorts from the
same generator (other seeds, so no target candidate is in any of them), train one
shadow model on each with the same recipe - clear shadows for the clear target,
DP shadows (the product's own ``dp_local_update``, OpenDP noise) for the DP target -
and score a candidate ``x`` with label ``y`` by how far the target's logit of the true
label, ``phi(x) = (2y - 1) * z(x)``, lies above the shadows' (OUT) distribution of
``phi(x)``: ``(phi_target(x) - mean_k phi_k(x)) / sigma`` (one-sided likelihood-ratio
test; sigma pooled over all candidates and shadows). The shadows are trained by the
attacker's replica of the FedAvg loop built from the product's public functions
(``init_weights``, ``local_sgd``, ``dp_local_update``, ``ServerOptimizer``); that the
replica is faithful is checked on every run: trained on the true members with the
hub's seed it must reproduce the clear target's weights (``replica_max_abs_diff``).
Also reported: the loss-threshold attack (Yeom et al. 2018), score = minus the
cross-entropy, which needs no shadow models.

Membership AUC: members vs non-members (0.5 = the attacker learns nothing); TPR at 5 %
FPR for the LiRA attack. Utility: AUROC of 28-day death on the non-members. Every
number is the mean over ``--seeds`` (a seed fixes the cohort, the member split, the
hub's initialisation and the shadows' data; DP noise comes from OpenDP's own
generator and is not seeded).

Prints a table and, with ``--json``, one JSON object as the last line with
``membership_auc_dp``, ``membership_auc_no_dp``, ``utility_auroc_dp``,
``utility_auroc_no_dp`` (LiRA AUC / utility, means over the seeds), the loss-attack
AUCs, the ε spent per site, the per-seed numbers and the run's settings.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import tomllib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score, roc_curve

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import healthfed.compute  # noqa: E402,F401 - registers the computations
from healthfed.compute.fedavg import (  # noqa: E402
    FederatedMLPClassifier,
    ServerOptimizer,
    dp_local_update,
    init_weights,
    local_sgd,
    logits,
    n_weights,
    round_dp,
    validate_dp_training,
)
from healthfed.compute.preprocess import standardisation_spec, transform_frame  # noqa: E402
from healthfed.data.dataset import NodeDataset  # noqa: E402
from healthfed.data.descriptor import descriptor_from_dict  # noqa: E402
from healthfed.data.synth import COVID_COLUMNS, covid_descriptor_toml, generate_covid_cohort  # noqa: E402
from healthfed.federation.federation import Federation  # noqa: E402
from healthfed.node.runtime import Node  # noqa: E402
from healthfed.policy import SitePolicy  # noqa: E402

TARGET = "death_28d"
FEATURES = [
    c
    for c, s in COVID_COLUMNS.items()
    if s["type"] in ("numeric", "binary") and c not in (TARGET, "icu", "d_dimer", "ldh")
]
POLICY = SitePolicy(max_param_ratio=1.0)  # the sites' choice; every other rule default
LOW_FPR = 0.05


def bounds_spec() -> dict[str, Any]:
    """Standardisation from the declared bounds only (no data, no privacy cost)."""
    centers, scales = [], []
    for c in FEATURES:
        spec = COVID_COLUMNS[c]
        if spec["type"] == "binary":
            centers.append(0.5)
            scales.append(0.5)
        else:
            lo, hi = spec["bounds"]
            centers.append((lo + hi) / 2)
            scales.append((hi - lo) / 4)
    return standardisation_spec(FEATURES, centers, scales)


def _frame(ds: NodeDataset) -> pd.DataFrame:
    con = ds.connect()
    try:
        return con.execute("SELECT * FROM data").df()
    finally:
        con.close()


def cohort(sites: int, rows: int, seed: int) -> list[dict[str, Any]]:
    """Per site: the member dataset (as a node loads it) and member/non-member frames.

    Frames are read back through the node's dataset, so they are in the canonical
    units the node trains on (e.g. hospital_2's CRP converted from mg/dL).
    """
    raw = generate_covid_cohort(sites=sites, rows=rows, seed=seed)
    rng = np.random.default_rng(seed + 1)
    out = []
    for k, (site, df) in enumerate(raw.items(), start=1):
        desc = descriptor_from_dict(
            tomllib.loads(covid_descriptor_toml(k, seed, rows)), base_dir=Path(".")
        )
        mask = rng.random(len(df)) < 0.5
        ds_in = NodeDataset.from_frame(df[mask].reset_index(drop=True), desc)
        ds_out = NodeDataset.from_frame(df[~mask].reset_index(drop=True), desc)
        out.append(
            {
                "site": site,
                "dataset": desc.name,
                "ds_in": ds_in,
                "members": _frame(ds_in),
                "outsiders": _frame(ds_out),
            }
        )
    return out


def complete(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows a node trains on with the minimal spec: complete cases."""
    return frame.dropna(subset=[*FEATURES, TARGET]).reset_index(drop=True)


# ------------------------------------------------------------------------------------
# The attacker's replica of the hub's FedAvg loop (shadow models)
# ------------------------------------------------------------------------------------
def dp_round_block(hp: dict[str, Any]) -> dict[str, Any]:
    """The per-round ``dp`` block a site validates (``round_dp`` at the site's δ)."""
    return validate_dp_training(
        round_dp({"epsilon": hp["epsilon"], "clip": hp["clip"]}, hp["rounds"]), POLICY
    )


def site_step(
    w: list[np.ndarray], X: np.ndarray, y: np.ndarray, hp: dict[str, Any], dp: bool, seed: int
) -> tuple[list[np.ndarray], int] | None:
    """One site's ``local_train`` answer (delta, row count) as the node computes it."""
    if len(y) < POLICY.min_subset or n_weights(w) > POLICY.max_param_ratio * len(y):
        return None  # the site refuses the round
    if not dp:
        w1 = local_sgd("mlp", w, X, y, hp["epochs"], hp["lr"], hp["batch_size"], 0.0, seed)
        return [a - b for a, b in zip(w1, w, strict=True)], len(y)
    rel = dp_local_update(
        "mlp", w, X, y, dp_round_block(hp), epochs=hp["dp_epochs"], lr=hp["lr"],
        mu=0.0, batch_size=hp["batch_size"], seed=seed,
    )  # fmt: skip
    vec = np.asarray(rel.values["delta"].value, dtype=float)
    d, i = [], 0
    for a in w:
        d.append(vec[i : i + a.size].reshape(a.shape))
        i += a.size
    return d, max(int(rel.values["n_rows"].value), 1)


def design(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    f = complete(frame)
    return transform_frame(f, bounds_spec()), f[TARGET].to_numpy(dtype=float)


def round_seed(random_state: int, r: int) -> int:
    return (random_state * 1_000_003 + r) % 2**31  # as FederatedMLPClassifier.fit


def replica_fit(
    site_frames: list[pd.DataFrame], hp: dict[str, Any], random_state: int, dp: bool
) -> list[np.ndarray]:
    """FedAvg as ``FederatedMLPClassifier.fit`` runs it, on frames the attacker holds.

    Same initialisation, per-round seeds, local step (``local_sgd``, or the product's
    ``dp_local_update`` with the per-round budget of ``round_dp`` at the site's δ),
    parameter/row refusal and server aggregation; no node, no ledger (the shadow
    data are the attacker's own).
    """
    data = [design(f) for f in site_frames]
    w = init_weights("mlp", len(FEATURES), hp["hidden"], random_state)
    opt = ServerOptimizer("fedavg")
    for r in range(1, hp["rounds"] + 1):
        answers = [site_step(w, X, y, hp, dp, round_seed(random_state, r)) for X, y in data]
        answers = [a for a in answers if a is not None]
        if len(answers) < POLICY.min_sites:
            raise RuntimeError(f"shadow round {r}: fewer than {POLICY.min_sites} sites")
        w = opt.step(w, [d for d, _ in answers], [n for _, n in answers])
    return w


def model_size(hidden: int) -> int:
    return n_weights(init_weights("mlp", len(FEATURES), hidden, 0))


def largest_hidden(parts: list[dict[str, Any]]) -> int:
    """The widest hidden layer whose weight count every site's rule accepts.

    (The analyst learns the sites' row counts anyway: a refusal names them.)
    """
    rows = min(len(complete(p["members"])) for p in parts)
    h = 1
    while model_size(h + 1) <= POLICY.max_param_ratio * rows:
        h += 1
    return h


def shadow_job(job: tuple[int, int, bool, dict[str, Any]]) -> list[np.ndarray]:
    """One shadow model: a fresh cohort from the generator, its member half, FedAvg.

    Cohort ``k`` of target seed ``s`` is drawn with generator seed
    ``1_000_000 + 100_000 * attempt + 1_000 * s + k`` (never a target's seed); a draw in
    which some site has too few complete-case members for the model (the site would
    refuse, as a target site would) is replaced by the next attempt.
    """
    seed, k, dp, hp = job
    need = max(POLICY.min_subset, int(np.ceil(model_size(hp["hidden"]) / POLICY.max_param_ratio)))
    for attempt in range(100):
        gen_seed = 1_000_000 + 100_000 * attempt + 1_000 * seed + k
        members = [p["members"] for p in cohort(hp["sites"], hp["rows"], gen_seed)]
        if min(len(complete(m)) for m in members) >= need:
            return replica_fit(members, hp, gen_seed, dp)
    raise RuntimeError(f"no shadow cohort with {need} complete-case members per site")


# ------------------------------------------------------------------------------------
# Attacks and metrics
# ------------------------------------------------------------------------------------
def true_label_logit(weights: list[np.ndarray], frame: pd.DataFrame) -> np.ndarray:
    """``phi = log(p_y / (1 - p_y))`` for the true label ``y``: ``(2y - 1) * z``."""
    z = logits("mlp", weights, transform_frame(frame, bounds_spec()))
    return (2.0 * frame[TARGET].to_numpy(dtype=float) - 1.0) * z


def lira_offline(phi_target: np.ndarray, phi_shadows: np.ndarray) -> np.ndarray:
    """Offline LiRA, fixed variance: z-score of the target's phi against OUT shadows."""
    mu = phi_shadows.mean(axis=0)
    sigma = float((phi_shadows - mu).std()) or 1.0
    return (phi_target - mu) / sigma


def tpr_at(labels: np.ndarray, score: np.ndarray, fpr: float) -> float:
    f, t, _ = roc_curve(labels, score)
    return float(np.interp(fpr, f, t))


def candidates(parts: list[dict[str, Any]]) -> tuple[pd.DataFrame, np.ndarray]:
    """Complete-case members then non-members of the given sites, and the 1/0 labels."""
    members = pd.concat([complete(p["members"]) for p in parts], ignore_index=True)
    outsiders = pd.concat([complete(p["outsiders"]) for p in parts], ignore_index=True)
    return (
        pd.concat([members, outsiders], ignore_index=True),
        np.r_[np.ones(len(members)), np.zeros(len(outsiders))],
    )


def evaluate(
    weights: list[np.ndarray], parts: list[dict[str, Any]], shadows: list[list[np.ndarray]]
) -> dict[str, float]:
    """Attacks on the released model (all sites' candidates) and its utility."""
    cand, labels = candidates(parts)
    z = logits("mlp", weights, transform_frame(cand, bounds_spec()))
    y = cand[TARGET].to_numpy(dtype=float)
    phi = (2.0 * y - 1.0) * z
    loss = np.logaddexp(0.0, -phi)
    lira = lira_offline(phi, np.array([true_label_logit(s, cand) for s in shadows]))
    out = labels == 0
    return {
        "membership_auc": float(roc_auc_score(labels, lira)),
        "membership_auc_loss": float(roc_auc_score(labels, -loss)),
        "tpr_at_5pct_fpr": tpr_at(labels, lira, LOW_FPR),
        "utility_auroc": float(roc_auc_score(y[out], z[out])),
        "train_loss": float(loss[~out].mean()),
        "test_loss": float(loss[out].mean()),
    }


def fit_target(nodes: list[Node], dataset: str, hp: dict[str, Any], seed: int, dp: bool):
    """The product's fit (nodes, ledgers, disclosure rules); the model and its time."""
    model = FederatedMLPClassifier(
        hidden=hp["hidden"],
        rounds=hp["rounds"],
        local_epochs=hp["dp_epochs"] if dp else hp["epochs"],
        lr=hp["lr"],
        batch_size=hp["batch_size"],
        random_state=seed,
        dp={"epsilon": hp["epsilon"], "clip": hp["clip"]} if dp else None,
    )
    t0 = time.perf_counter()
    with Federation.inprocess(nodes) as fed:
        model.fit(fed, dataset, TARGET, preprocess=bounds_spec())
    return model, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sites", type=int, default=2)
    ap.add_argument("--rows", type=int, default=200, help="admissions per site (half are members)")
    ap.add_argument(
        "--hidden", type=int, default=0, help="hidden units (0: the largest the sites accept)"
    )
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--epochs", type=int, default=5, help="local epochs per round (clear fit)")
    ap.add_argument(
        "--dp-epochs", type=int, default=1, help="noisy full-batch steps per round (DP fit)"
    )
    ap.add_argument("--lr", type=float, default=0.3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--epsilon", type=float, default=5.0, help="DP budget of the whole fit")
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--shadows", type=int, default=16, help="shadow models per target")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="shadow processes")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    hp_keys = ("sites", "rows", "hidden", "rounds", "epochs", "dp_epochs", "lr", "batch_size")
    hp = {k: getattr(args, k) for k in (*hp_keys, "epsilon", "clip")}
    t_start = time.perf_counter()

    # 1. The targets, through the product (nothing else running, so the timings are fair).
    per_seed: list[dict[str, Any]] = []
    hps: dict[int, dict[str, Any]] = {}
    targets: dict[tuple[int, bool], list[np.ndarray]] = {}
    data: dict[int, list[dict[str, Any]]] = {}
    timings = {False: 0.0, True: 0.0}
    spent: dict[str, float] = {}
    replica_diff = 0.0
    for seed in args.seeds:
        parts = cohort(args.sites, args.rows, seed)
        hp_s = {**hp, "hidden": args.hidden or largest_hidden(parts)}
        hps[seed] = hp_s
        nodes = [
            Node(name=p["site"], datasets={p["dataset"]: p["ds_in"]}, policy=POLICY) for p in parts
        ]
        for dp in (False, True):
            model, dt = fit_target(nodes, parts[0]["dataset"], hp_s, seed, dp)
            targets[seed, dp] = model.weights_
            timings[dp] += dt
        for node in nodes:
            frame = node.privacy_guard.budget(POLICY)
            eps = float(frame["epsilon_spent"].sum()) if len(frame) else 0.0
            spent[node.name] = max(spent.get(node.name, 0.0), eps)
        data[seed] = parts
        # The attacker's replica must reproduce the clear target from the same data and seed.
        rep = replica_fit([p["members"] for p in parts], hp_s, seed, dp=False)
        diff = max(
            float(np.max(np.abs(a - b))) for a, b in zip(rep, targets[seed, False], strict=True)
        )
        replica_diff = max(replica_diff, diff)
        cand, labels = candidates(parts)
        per_seed.append(
            {
                "seed": seed,
                "members": int(labels.sum()),
                "non_members": int(len(labels) - labels.sum()),
                "members_per_site": [int(len(complete(p["members"]))) for p in parts],
                "hidden": hp_s["hidden"],
                "n_params": model_size(hp_s["hidden"]),
            }
        )
    if replica_diff > 1e-6:
        print(
            f"WARNING: the attacker's FedAvg replica differs from the product's fit "
            f"(max |dw| = {replica_diff:.3g}); the shadow models may not match the recipe",
            file=sys.stderr,
        )

    # 2. The attacker's shadow models (CPU-bound, in worker processes).
    jobs = [
        (s, k, dp, hps[s]) for s in args.seeds for dp in (False, True) for k in range(args.shadows)
    ]
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    if args.jobs > 1:
        import multiprocessing as mp

        with ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn")) as pool:
            shadow_w = list(pool.map(shadow_job, jobs))
    else:
        shadow_w = [shadow_job(j) for j in jobs]
    shadows: dict[tuple[int, bool], list[list[np.ndarray]]] = {}
    for (s, _, dp, _), w in zip(jobs, shadow_w, strict=True):
        shadows.setdefault((s, dp), []).append(w)

    # 3. Attack every target.
    keys = ("membership_auc", "membership_auc_loss", "tpr_at_5pct_fpr", "utility_auroc")
    keys += ("train_loss", "test_loss")
    for row in per_seed:
        s = row["seed"]
        for dp, label in ((False, "no_dp"), (True, "dp")):
            res = evaluate(targets[s, dp], data[s], shadows[s, dp])
            row.update({f"{k}_{label}": res[k] for k in keys})
    mean = {
        f"{k}_{label}": float(np.mean([r[f"{k}_{label}"] for r in per_seed]))
        for k in keys
        for label in ("no_dp", "dp")
    }
    run_time = time.perf_counter() - t_start

    def seeds_of(key: str) -> str:
        return ", ".join(f"{r[key]:.3f}" for r in per_seed)

    table = [
        ("membership AUC, LiRA (offline)", "membership_auc"),
        ("membership AUC, loss threshold", "membership_auc_loss"),
        ("LiRA TPR at 5% FPR", "tpr_at_5pct_fpr"),
        ("utility AUROC (non-members)", "utility_auroc"),
        ("mean loss, members", "train_loss"),
        ("mean loss, non-members", "test_loss"),
    ]
    print(
        f"{args.sites} sites x {args.rows} admissions, complete-case members/site "
        f"{[r['members_per_site'] for r in per_seed]}, MLP weights "
        f"{[r['n_params'] for r in per_seed]}, "
        f"{args.shadows} shadow models per target, seeds {args.seeds}"
    )
    print(f"{'metric (mean over seeds)':32s} {'no DP':>8s} {'DP-FL':>8s}   per seed (no DP | DP)")
    for name, k in table:
        print(
            f"{name:32s} {mean[k + '_no_dp']:8.4f} {mean[k + '_dp']:8.4f}   "
            f"{seeds_of(k + '_no_dp')} | {seeds_of(k + '_dp')}"
        )
    ratio = timings[True] / timings[False]
    print(f"{'fit time ratio (vs no DP)':32s} {1.0:8.4f} {ratio:8.4f}")
    print("ε spent per site (DP fit): " + ", ".join(f"{s}={e:.3f}" for s, e in spent.items()))
    print(f"replica check: max |dw| = {replica_diff:.2e}; run time {run_time:.0f} s")
    out = {
        "membership_auc_dp": mean["membership_auc_dp"],
        "membership_auc_no_dp": mean["membership_auc_no_dp"],
        "utility_auroc_dp": mean["utility_auroc_dp"],
        "utility_auroc_no_dp": mean["utility_auroc_no_dp"],
        "membership_auc_loss_dp": mean["membership_auc_loss_dp"],
        "membership_auc_loss_no_dp": mean["membership_auc_loss_no_dp"],
        "tpr_at_5pct_fpr_dp": mean["tpr_at_5pct_fpr_dp"],
        "tpr_at_5pct_fpr_no_dp": mean["tpr_at_5pct_fpr_no_dp"],
        "attack": f"offline LiRA, fixed variance, {args.shadows} shadow models per target",
        "epsilon_spent_per_site": spent,
        "time_ratio_dp_vs_no_dp": ratio,
        "rows_per_site": args.rows,
        "members": float(np.mean([r["members"] for r in per_seed])),
        "non_members": float(np.mean([r["non_members"] for r in per_seed])),
        "n_params": [r["n_params"] for r in per_seed],
        "replica_max_abs_diff": replica_diff,
        "per_seed": per_seed,
        "run_time_s": run_time,
        "settings": {k: v for k, v in vars(args).items() if k not in ("json", "jobs")},
        "policy": {"max_param_ratio": POLICY.max_param_ratio, "other rules": "default"},
        "model": "MLP (tanh, hidden = per_seed[i]['hidden']), FedAvg, DP level=sample "
        "(per-patient clipping)",
    }
    if args.json:
        print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
