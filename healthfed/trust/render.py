"""Render a trust report dict as one self-contained HTML page (plots as inline PNG).

Nothing is fetched when the page is opened: styles are inline, plots are
``data:image/png;base64`` images drawn with matplotlib's Agg backend
(:mod:`healthfed.trust.plots`), and the only script is a one-line error
sentinel (``window.onerror`` marks the page's title), so the page reads offline
and prints as it looks.
"""

from __future__ import annotations

import html
import math
from typing import Any

from healthfed.trust.plots import (
    plot_fairness,
    plot_forest_auroc,
    plot_importance,
    plot_local,
    plot_odds_ratios,
    plot_reliability,
    plot_roc,
)

__all__ = ["render_html"]

_CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;color:#1d2733;background:#f6f8fa}
main{max-width:1180px;margin:0 auto;padding:24px 32px 64px;background:#fff}
h1{font-size:26px;margin:8px 0 4px} h2{font-size:20px;border-bottom:2px solid #d0d7de;padding-bottom:4px;margin-top:36px}
h3{font-size:16px;margin:20px 0 6px} p,li{line-height:1.45}
table{border-collapse:collapse;margin:8px 0 16px;font-size:13px}
th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:right;vertical-align:top}
th{background:#eef2f6} td.l,th.l{text-align:left}
.sup{color:#9a6700;font-style:italic} .warn{background:#fff8c5;border:1px solid #d4a72c;padding:6px 10px;border-radius:4px}
.muted{color:#57606a;font-size:12px} .fig{margin:8px 0 16px} .fig img{max-width:100%;border:1px solid #eee}
.status-filled{color:#1a7f37} .status-partial{color:#9a6700} .status-authors{color:#cf222e}
.met-yes{color:#1a7f37;font-weight:600} .met-partial{color:#9a6700;font-weight:600} .met-no{color:#cf222e;font-weight:600}
.grid2{display:grid;grid-template-columns:1fr 1fr;gap:12px} code{font-size:12px;background:#f0f2f4;padding:1px 4px}
nav a{margin-right:12px}
"""

_SENTINEL = (
    "window.addEventListener('error',function(e){document.title='JS-ERROR: '+e.message;});"
    "document.documentElement.setAttribute('data-report','ok');"
)


def esc(v: Any) -> str:
    return html.escape(str(v), quote=True)


def fmt(v: Any, nd: int = 3) -> str:
    if v is None or (isinstance(v, float) and (math.isnan(v) or math.isinf(v))):
        return '<span class="muted">n/a</span>'
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return esc(v)


def ci(m: dict[str, Any], key: str, nd: int = 3) -> str:
    lo, hi = m.get(f"{key}_ci_low"), m.get(f"{key}_ci_high")
    if lo is None or hi is None:
        return fmt(m.get(key), nd)
    return f"{fmt(m.get(key), nd)} <span class='muted'>({fmt(lo, nd)}–{fmt(hi, nd)})</span>"


def table(head: list[str], rows: list[list[str]], left: int = 1) -> str:
    th = "".join(f"<th class='{'l' if i < left else ''}'>{h}</th>" for i, h in enumerate(head))
    body = "".join(
        "<tr>"
        + "".join(f"<td class='{'l' if i < left else ''}'>{c}</td>" for i, c in enumerate(r))
        + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


# --------------------------------------------------------------------------------------
# sections
# --------------------------------------------------------------------------------------
def _provenance(r: dict[str, Any]) -> str:
    p = r["provenance"]
    rows = [
        [
            esc(s),
            fmt(v["n_rounded"]),
            f"<code>{esc(v['content_hash'][:16])}…</code> ({esc(v['hash_kind'])})",
        ]
        for s, v in p["sites"].items()
    ]
    tr = p.get("training", {})
    settings = ", ".join(f"{esc(k)}={esc(v)}" for k, v in (tr.get("parameters") or {}).items())
    refused = p["privacy"]["refusals"]
    return (
        "<h2 id='provenance'>1. Provenance</h2>"
        + table(
            ["", ""],
            [
                ["Permit id", esc(p.get("permit_id") or "none recorded")],
                ["Purpose", esc(p.get("purpose") or "none recorded")],
                ["Model hash (sha256)", f"<code>{esc(p['model_hash'])}</code>"],
                ["Code version", esc(p["code_version"])],
                ["Dataset", esc(p["dataset"])],
                [
                    "Training",
                    f"{esc(tr.get('estimator', ''))}: {settings or 'n/a'}; rounds "
                    f"{fmt(tr.get('rounds'))}; sites {esc(', '.join(tr.get('sites', [])))}",
                ],
                [
                    "Privacy spent",
                    f"ε = {fmt(p['privacy']['dp_epsilon_spent'], 1)} "
                    f"({esc(p['privacy']['mechanism'])})",
                ],
                ["Refusals", esc("; ".join(f"{k}: {v}" for k, v in refused.items()) or "none")],
            ],
            left=2,
        )
        + "<h3>Sites that contributed</h3>"
        + table(["Site", "Rows (rounded to 10)", "Dataset version (content hash)"], rows, left=1)
    )


def _performance(r: dict[str, Any]) -> str:
    perf = r["performance"]
    t = r["settings"]["threshold"]
    head = [
        "",
        "n",
        "events",
        "AUROC (95% CI)",
        "AUROC bounds",
        "Accuracy",
        f"Sensitivity @ {t:g}",
        f"Specificity @ {t:g}",
        "Brier",
    ]

    def row(name: str, m: dict[str, Any]) -> list[str]:
        return [
            esc(name),
            fmt(int(m["n"])),
            fmt(int(m["n_pos"])),
            ci(m, "auroc"),
            f"[{fmt(m.get('auroc_min'))}, {fmt(m.get('auroc_max'))}]",
            ci(m, "accuracy"),
            ci(m, "sensitivity"),
            ci(m, "specificity"),
            ci(m, "brier"),
        ]

    rows = [row(s, perf["by_site"][s]) for s in perf["sites"]] + [row("pooled", perf["pooled"])]
    het = perf["heterogeneity"]["auroc"]
    het_text = (
        f"Random-effects meta-analysis of per-site AUROC (logit scale, DerSimonian-Laird): "
        f"{fmt(het.get('estimate'))} (95% CI {fmt(het.get('ci_low'))}–{fmt(het.get('ci_high'))}); "
        f"95% prediction interval for a new site {fmt(het.get('pi_low'))}–{fmt(het.get('pi_high'))}; "
        f"Q = {fmt(het.get('q'), 2)} (p = {fmt(het.get('q_p'), 3)}), I² = {fmt(het.get('i2'), 2)}, "
        f"τ² = {fmt(het.get('tau2'), 4)}."
    )
    return (
        "<h2 id='performance'>2. Performance</h2>"
        f"<p>Evaluation rows: {esc(r['settings']['holdout_text'])}. 95% CIs: DeLong (AUROC), Wilson "
        "(proportions), normal (Brier). AUROC bounds: the smallest and largest AUROC consistent with "
        "the released (merged) score histograms.</p>"
        + table(head, rows)
        + "<div class='grid2'>"
        + plot_roc(r)
        + plot_forest_auroc(r)
        + "</div>"
        + f"<h3>Heterogeneity across sites</h3><p>{het_text}</p>"
    )


def _calibration(r: dict[str, Any]) -> str:
    cal = r["calibration"]
    oe = r["performance"]["observed_expected"]
    rows = [
        [
            esc(s),
            fmt(m.get("calibration_intercept")),
            fmt(m.get("calibration_slope")),
            fmt(oe.get(s)),
        ]
        for s, m in [*cal["by_site"].items(), ("pooled", cal["pooled"])]
    ]
    return (
        "<h2 id='calibration'>3. Calibration</h2>"
        "<p>Calibration-in-the-large: <i>c</i> in logit P(y) = c + logit(p) (ideal 0); slope: "
        "<i>b</i> in logit P(y) = a + b·logit(p) (ideal 1); both exact pooled maximum-likelihood fits "
        "by federated Newton. O/E: observed events / sum of predicted risks.</p>"
        + table(["", "Calibration-in-the-large", "Calibration slope", "O/E"], rows)
        + plot_reliability(r)
    )


def _fairness(r: dict[str, Any]) -> str:
    out = [
        "<h2 id='fairness'>4. Fairness</h2>",
        f"<p>{esc(r['fairness']['method'])}. Age bands: {esc(r['fairness']['age_bands'])}. "
        "Differences and ratios are between groups (max − min, min / max). A group too small at a "
        "site is <span class='sup'>suppressed</span> there by the site's disclosure filter and left "
        "out of the pooled numbers.</p>",
    ]
    keys = [
        ("n", "n", 0),
        ("n_pos", "events", 0),
        ("auroc", "AUROC", 3),
        ("accuracy", "Accuracy", 3),
        ("sensitivity", "Sensitivity", 3),
        ("specificity", "Specificity", 3),
        ("selection_rate", "Selection rate", 3),
        ("brier", "Brier", 3),
        ("mean_predicted", "Mean predicted", 3),
        ("observed_rate", "Observed rate", 3),
    ]
    for f in r["fairness"]["frames"]:
        out.append(f"<h3>By {esc(f['attribute'])}</h3>")
        rows = []
        for g in f["groups_order"]:
            note = f["groups"].get(g, {})
            if g in f["by_group"]:
                m = f["by_group"][g]
                cells = [
                    ci(m, k, nd)
                    if k in ("auroc", "accuracy", "sensitivity", "specificity", "brier")
                    else fmt(int(m[k]) if nd == 0 and m.get(k) is not None else m.get(k), nd)
                    for k, _, nd in keys
                ]
                extra = ""
                if note.get("suppressed_at"):
                    extra = f" <span class='sup'>(suppressed at {esc(', '.join(note['suppressed_at']))})</span>"
                part = sorted({s for v in (note.get("excluded") or {}).values() for s in v})
                if part:
                    extra += (
                        f" <span class='sup'>(some cells suppressed at {esc(', '.join(part))}; "
                        "those sites are left out of the metrics needing them)</span>"
                    )
                rows.append([esc(g) + extra, *cells])
            elif note.get("suppressed"):
                rows.append([esc(g), *(["<span class='sup'>suppressed</span>"] * len(keys))])
        for label, d in (("difference", f["difference"]), ("ratio", f["ratio"])):
            rows.append(
                [
                    f"<b>{label}</b>",
                    *[fmt(d.get(k)) if k not in ("n", "n_pos") else "" for k, _, _ in keys],
                ]
            )
        out.append(table(["Group", *[h for _, h, _ in keys]], rows))
        if f["by_group"]:
            out.append(plot_fairness(f))
        sites = sorted(f["site_counts"])
        srows = [
            [
                esc(g),
                *[
                    "<span class='sup'>suppressed</span>"
                    if f["site_counts"][s].get(g) is None
                    else fmt(f["site_counts"][s][g])
                    for s in sites
                ],
            ]
            for g in f["groups_order"]
        ]
        out.append(
            "<p class='muted'>Evaluation rows per group and site as released:</p>"
            + table(["Group", *[esc(s) for s in sites]], srows)
        )
    return "".join(out)


def _explanations(r: dict[str, Any]) -> str:
    e = r["explanations"]
    out = ["<h2 id='explanations'>5. Explanations</h2>"]
    if e.get("coefficients"):
        rows = [
            [
                esc(c["term"]),
                esc(c.get("per") or ""),
                fmt(c["coef"]),
                fmt(c["se"]),
                fmt(c.get("odds_ratio")),
                f"{fmt(c.get('odds_ratio_lower'))}–{fmt(c.get('odds_ratio_upper'))}",
                fmt(c["p"], 4),
            ]
            for c in e["coefficients"]
        ]
        out.append(
            "<h3>Global: coefficients and odds ratios (exact federated GLM, Wald 95% CI)</h3>"
        )
        out.append(table(["Term", "Per", "Coefficient", "SE", "Odds ratio", "95% CI", "p"], rows))
        out.append(plot_odds_ratios(e["coefficients"]))
    pi = e["permutation_importance"]
    out.append(
        f"<h3>Global: federated permutation importance</h3><p>Each site permutes one feature at a "
        f"time among its own evaluation rows ({pi['n']:,} rows in all) and releases only summed "
        f"losses. Baseline log-loss {pi['base_logloss']:.4f}, Brier {pi['base_brier']:.4f}.</p>"
    )
    out.append(plot_importance(pi))
    loc = e["local"]
    interval = loc.get("interval")
    pt = ", ".join(f"{esc(k)}={esc(v)}" for k, v in loc["patient"].items())
    out.append(
        f"<h3>Local: one patient's prediction</h3><p>{esc(loc['note'])} Input: {pt}.</p>"
        f"<p>Predicted risk <b>{loc['probability']:.3f}</b>"
        + (
            f" (95% CI {interval[0]:.3f}–{interval[1]:.3f}; {esc(loc['interval_note'])})"
            if interval
            else f" ({esc(loc['interval_note'])})"
        )
        + f". Reference (base) log-odds {loc['base_value']:.3f}; method: {esc(loc['explanation_method'])}.</p>"
    )
    for w in loc.get("warnings") or []:
        out.append(f"<p class='warn'>⚠ {esc(w)}</p>")
    out.append(plot_local(loc))
    return "".join(out)


def _cards(r: dict[str, Any]) -> str:
    mc = table(
        ["Section", "Content", "Status"],
        [
            [
                esc(s["section"]),
                esc(s["content"]),
                f"<span class='status-{s['status']}'>{esc(s['status'])}</span>",
            ]
            for s in r["model_card"]
        ],
        left=2,
    )
    tp = table(
        ["Item", "Topic", "Content", "Status"],
        [
            [
                esc(i["item"]),
                esc(i["topic"]),
                esc(i["content"]),
                f"<span class='status-{i['status']}'>{esc(i['status'])}</span>",
            ]
            for i in r["tripod_ai"]
        ],
        left=3,
    )
    fa = table(
        ["Principle", "Recommendation", "Met", "Evidence"],
        [
            [
                esc(i["principle"]),
                esc(i["recommendation"]),
                f"<span class='met-{i['met']}'>{esc(i['met'])}</span>",
                esc(i["evidence"]),
            ]
            for i in r["future_ai"]
        ],
        left=4,
    )
    return (
        "<h2 id='cards'>6. Model card, TRIPOD+AI and FUTURE-AI</h2>"
        "<h3>Model card (Mitchell et al., 2019)</h3>"
        + mc
        + "<h3>TRIPOD+AI checklist (Collins et al., BMJ 2024)</h3>"
        "<p class='muted'>filled: from this run; partial: software part filled, the rest for the "
        "authors; authors: to be written by the authors.</p>"
        + tp
        + "<h3>FUTURE-AI recommendations met by this run</h3>"
        + fa
    )


def _oversight(r: dict[str, Any]) -> str:
    o = r["oversight"]
    return (
        "<h2 id='oversight'>7. Human oversight</h2><ul>"
        f"<li>Predict for one patient: <code>{esc(o['predict'])}</code> — probability, 95% interval, "
        "local explanation, warnings when the input is outside the training distribution (outside the "
        "ranges seen, missing required values).</li>"
        f"<li>Record the clinician's decision: <code>{esc(o['decide'])}</code> — {esc(o['audit'])}.</li>"
        "</ul>"
    )


def render_html(r: dict[str, Any]) -> str:
    """The whole report page (one string, no external resources)."""
    s = r["settings"]
    nav = "".join(
        f"<a href='#{a}'>{t}</a>"
        for a, t in [
            ("provenance", "Provenance"),
            ("performance", "Performance"),
            ("calibration", "Calibration"),
            ("fairness", "Fairness"),
            ("explanations", "Explanations"),
            ("cards", "Model card &amp; checklists"),
            ("oversight", "Oversight"),
        ]
    )
    banner = (
        "<p class='warn'>Synthetic data: this report demonstrates the method; the model is not for "
        "clinical use.</p>"
        if s.get("synthetic")
        else ""
    )
    banner += "".join(f"<p class='warn'>Warning: {esc(w)}.</p>" for w in s.get("warnings", []))
    body = "".join(
        [
            f"<h1>{esc(r['title'])}</h1>",
            f"<p class='muted'>Created {esc(r['created'])} · dataset <b>{esc(s['dataset'])}</b> · outcome "
            f"<b>{esc(s['target'])}</b> · threshold {s['threshold']:g} · {s['federated_rounds']} federated "
            f"rounds · all numbers from federated evaluation passed through the sites' disclosure filters · "
            f"model <code>{esc(r['provenance']['model_hash'][:16])}…</code></p>",
            banner,
            f"<nav>{nav}</nav>",
            _provenance(r),
            _performance(r),
            _calibration(r),
            _fairness(r),
            _explanations(r),
            _cards(r),
            _oversight(r),
            "<p class='muted'>Machine-readable: report.json (same content).</p>",
        ]
    )
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        "<link rel='icon' href='data:,'>"
        f"<title>{esc(r['title'])}</title><style>{_CSS}</style>"
        f"<script>{_SENTINEL}</script></head><body><main>{body}</main></body></html>"
    )
