"""The trust report's plots, drawn with matplotlib's Agg backend as inline PNG ``<img>`` tags.

Each ``plot_*`` function takes the report dict (or one of its parts) and returns
an HTML ``<div class='fig'>`` holding a ``data:image/png;base64`` image, so the
page needs nothing from elsewhere when it is opened.
"""

from __future__ import annotations

import base64
import io
from typing import Any

__all__ = [
    "plot_fairness",
    "plot_forest_auroc",
    "plot_importance",
    "plot_local",
    "plot_odds_ratios",
    "plot_reliability",
    "plot_roc",
]


def _png(fig: Any) -> str:
    # matplotlib is heavy: imported when a report is drawn (keeps `import healthfed` fast).
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f"<div class='fig'><img alt='plot' src='data:image/png;base64,{data}'></div>"


def _plt() -> Any:
    """matplotlib.pyplot on the Agg backend (no display; imported on first plot)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_roc(r: dict[str, Any]) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    for row, pts in r["performance"]["roc"].items():
        pooled = row == "pooled"
        auc = (r["performance"]["pooled"] if pooled else r["performance"]["by_site"][row]).get(
            "auroc"
        )
        ax.plot(
            pts["fpr"],
            pts["tpr"],
            lw=2.5 if pooled else 1.2,
            color="black" if pooled else None,
            label=f"{row} (AUROC {auc:.3f})" if auc is not None else row,
        )
    ax.plot([0, 1], [0, 1], ls=":", color="grey")
    ax.set(
        xlabel="1 - specificity", ylabel="sensitivity", title="ROC curves", xlim=(0, 1), ylim=(0, 1)
    )
    ax.legend(fontsize=8, loc="lower right")
    return _png(fig)


def plot_forest_auroc(r: dict[str, Any]) -> str:
    plt = _plt()
    perf = r["performance"]
    rows = [(s, perf["by_site"][s]) for s in perf["sites"]]
    fig, ax = plt.subplots(figsize=(5.2, 0.45 * (len(rows) + 3) + 0.8))
    y = list(range(len(rows) + 1, 1, -1))
    for yi, (_, m) in zip(y, rows, strict=True):
        if m.get("auroc") is None:
            continue
        ax.errorbar(
            m["auroc"],
            yi,
            xerr=[[m["auroc"] - m["auroc_ci_low"]], [m["auroc_ci_high"] - m["auroc"]]],
            fmt="s",
            color="C0",
            capsize=3,
        )
    p = perf["pooled"]
    if p.get("auroc") is not None:
        ax.errorbar(
            p["auroc"],
            1,
            xerr=[[p["auroc"] - p["auroc_ci_low"]], [p["auroc_ci_high"] - p["auroc"]]],
            fmt="D",
            color="black",
            capsize=3,
        )
    het = perf["heterogeneity"]["auroc"]
    if het.get("pi_low") is not None and het.get("pi_low") == het.get("pi_low"):
        ax.plot([het["pi_low"], het["pi_high"]], [0.4, 0.4], color="C3", lw=3)
    ax.set_yticks([*y, 1, 0.4], [s for s, _ in rows] + ["pooled", "95% PI (new site)"])
    ax.set(xlabel="AUROC (95% CI)", title=f"AUROC by site (I² = {het.get('i2', float('nan')):.2f})")
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def plot_reliability(r: dict[str, Any]) -> str:
    plt = _plt()
    rel = r["calibration"]["reliability"]
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    for row, pts in rel.items():
        if not pts:
            continue
        pooled = row == "pooled"
        xs = [p["mean_predicted"] for p in pts]
        ys = [p["observed"] for p in pts]
        if pooled:
            lo = [p["observed"] - p["observed_ci_low"] for p in pts]
            hi = [p["observed_ci_high"] - p["observed"] for p in pts]
            ax.errorbar(
                xs, ys, yerr=[lo, hi], fmt="o-", color="black", lw=2.2, capsize=2, label="pooled"
            )
        else:
            ax.plot(xs, ys, "o-", ms=3, lw=1, alpha=0.85, label=row)
    ax.plot([0, 1], [0, 1], ls=":", color="grey")
    ax.set(
        xlabel="mean predicted risk",
        ylabel="observed event rate",
        title="Reliability (10 risk bins)",
        xlim=(0, 1),
        ylim=(0, 1),
    )
    ax.legend(fontsize=8, loc="upper left")
    return _png(fig)


def plot_fairness(frame: dict[str, Any]) -> str:
    plt = _plt()
    metrics = [
        ("auroc", "AUROC"),
        ("sensitivity", "Sensitivity"),
        ("specificity", "Specificity"),
        ("brier", "Brier"),
    ]
    groups = [g for g in frame["groups_order"] if g in frame["by_group"]]
    fig, axes = plt.subplots(1, len(metrics), figsize=(11, 0.38 * len(groups) + 1.4), sharey=True)
    for ax, (key, label) in zip(axes, metrics, strict=True):
        for i, g in enumerate(groups):
            m = frame["by_group"][g]
            v = m.get(key)
            if v is None:
                continue
            lo, hi = m.get(f"{key}_ci_low"), m.get(f"{key}_ci_high")
            err = (
                [[max(0.0, v - lo)], [max(0.0, hi - v)]]
                if lo is not None and hi is not None
                else None
            )
            ax.errorbar(v, i, xerr=err, fmt="o", color="C0", capsize=3)
        ov = frame["overall"].get(key)
        if ov is not None:
            ax.axvline(ov, color="grey", ls="--", lw=1)
        ax.set_title(label, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(groups)), groups)
    axes[0].invert_yaxis()
    fig.suptitle(f"By {frame['attribute']} (dashed: overall; bars: 95% CI)", fontsize=11)
    fig.tight_layout()
    return _png(fig)


def plot_odds_ratios(coefs: list[dict[str, Any]]) -> str:
    plt = _plt()
    rows = [c for c in coefs if c["term"] != "intercept" and c.get("odds_ratio") is not None]
    fig, ax = plt.subplots(figsize=(6.5, 0.32 * len(rows) + 1.0))
    for i, c in enumerate(rows):
        ax.errorbar(
            c["odds_ratio"],
            i,
            xerr=[
                [c["odds_ratio"] - c["odds_ratio_lower"]],
                [c["odds_ratio_upper"] - c["odds_ratio"]],
            ],
            fmt="s",
            color="C0",
            capsize=3,
        )
    ax.axvline(1.0, color="grey", ls=":")
    ax.set_xscale("log")
    ax.set_yticks(range(len(rows)), [c["term"] for c in rows])
    ax.invert_yaxis()
    ax.set(xlabel="odds ratio (95% CI), per pooled SD for numeric features", title="Odds ratios")
    return _png(fig)


def plot_importance(pi: dict[str, Any]) -> str:
    plt = _plt()
    order = sorted(range(len(pi["features"])), key=lambda i: pi["logloss_increase"][i])
    fig, ax = plt.subplots(figsize=(6.5, 0.3 * len(order) + 1.0))
    ax.barh(
        [pi["features"][i] for i in order],
        [pi["logloss_increase"][i] for i in order],
        xerr=[pi["logloss_increase_sd"][i] for i in order],
        color="C2",
    )
    ax.set(
        xlabel="increase in mean log-loss when permuted (mean ± SD over repeats)",
        title="Federated permutation importance",
    )
    return _png(fig)


def plot_local(local: dict[str, Any]) -> str:
    plt = _plt()
    items = sorted(local["contributions"].items(), key=lambda kv: abs(kv[1]))
    fig, ax = plt.subplots(figsize=(6.5, 0.3 * len(items) + 1.2))
    ax.barh(
        [k for k, _ in items],
        [v for _, v in items],
        color=["C3" if v > 0 else "C0" for _, v in items],
    )
    ax.axvline(0, color="black", lw=0.8)
    p = local["probability"]
    ax.set(
        xlabel="contribution to the log-odds vs the reference patient",
        title=f"Local explanation: predicted risk {p:.3f}",
    )
    return _png(fig)
