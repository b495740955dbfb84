"""The paper's LaTeX tables (booktabs): correlations, predictor roles, per-setting results, per-task
accuracy, and the within-level and leave-one-model-out results. Every number is a macro of numbers.tex."""

from __future__ import annotations

from typing import Any

from gradprune.analysis.feature_sets import BOTH, STATS_RATIO
from gradprune.analysis.latex import Macros, code, escape, table
from gradprune.analysis.pipeline import EXPORTED, Analysis
from gradprune.prediction.columns import PROXY, RATIO, SETTING, STATISTIC

ROLE_LABELS = {SETTING: "settings only", STATISTIC: "gradient statistics", PROXY: "post-pruning proxies",
               RATIO: "pruning ratio / parameter count", BOTH: "statistics + settings",
               STATS_RATIO: "statistics + ratio", EXPORTED: "exported model (choice among all)"}
MAX_SETTINGS = 8  # settings per level in the table (all of them are in analysis.json)
RHO, PBH = r"$\rho$", r"$p_{\mathrm{BH}}$"


def level(m: Macros) -> str:
    """The confidence level (95 %) as a macro, with its percent sign."""
    return m.number("CI Level", 95, "", kind="int") + r"\,\%"


def _ci(m: Macros, key: str, entry: dict[str, Any], path: str) -> str:
    lo = m.number(f"{key} Low", entry.get("spearman_ci_low"), f"{path}/spearman_ci_low")
    hi = m.number(f"{key} High", entry.get("spearman_ci_high"), f"{path}/spearman_ci_high")
    return f"[{lo}, {hi}]" if "--" not in (lo, hi) else "--"


def correlation_cells(m: Macros, key: str, entry: dict[str, Any], path: str) -> list[str]:
    """ρ, its CI and the BH-adjusted p of one correlation entry, as macros."""
    return [m.number(f"Rho {key}", entry.get("spearman"), f"{path}/spearman"),
            _ci(m, f"Rho {key}", entry, path),
            m.number(f"Padj {key}", entry.get("spearman_p_bh"), f"{path}/spearman_p_bh", kind="p")]


def correlations_table(a: Analysis, doc: dict, m: Macros) -> str:
    """Every defined feature: n, ρ, CI, BH-adjusted p (and within the grouping's levels)."""
    within = doc["within"]
    header = ["Feature", "$n$", RHO, f"{level(m)} CI", PBH]
    if within:
        header += [f"{RHO} within", PBH]
    rows = []
    for name, e in doc["correlations"].items():
        if e["spearman"] is None:
            continue
        row = [code(name), m.number(f"N {name}", e["n"], f"correlations/{name}/n", kind="int"),
               *correlation_cells(m, name, e, f"correlations/{name}")]
        if within:
            w = within["pooled"].get(name, {})
            row += [m.number(f"Rho Within {name}", w.get("spearman"), f"within/pooled/{name}/spearman"),
                    m.number(f"Padj Within {name}", w.get("spearman_p_bh"), f"within/pooled/{name}/spearman_p_bh",
                             kind="p")]
        rows.append(row)
    scope = "per-setting means over seeds" if a.replicates is not None else "trials"
    caption = (f"Spearman correlation of each feature with {code(a.target)} over {scope}; {level(m)} percentile "
               "bootstrap interval; $p$ Benjamini--Hochberg adjusted over the features.")
    if within:
        caption += (f" Within: pooled over the levels of {code(within['column'])} with the level as a covariate "
                    "(deviations from each level's mean).")
    return table("l" + "r" * (len(header) - 1), header, rows, caption, "tab:gp-correlations")


def predictors_table(a: Analysis, doc: dict, m: Macros) -> str:
    """Each feature role: the best predictor, nested cross-validated R² and permutation p."""
    within = doc["within"]
    header = ["Features", "Best candidate", r"Nested CV $R^2$", "Permutation $p$"]
    if within and within["pooled_roles"]:
        header += [r"$R^2$ within", "$p$ within"]
    rows = []
    entries = [*doc["roles"].items(), (EXPORTED, doc["exported"])]
    for name, e in entries:
        path = "exported" if name == EXPORTED else f"roles/{name}"
        row = [escape(ROLE_LABELS.get(name, name)), code(e["best"].split(" on ")[0]),
               m.number(f"Rsq {name}", e["r2_cv_nested"], f"{path}/r2_cv_nested"),
               m.number(f"Perm {name}", e["permutation_p"], f"{path}/permutation_p", kind="p")]
        if len(header) > 4:
            w = within["pooled_roles"].get(name)
            row += ([m.number(f"Rsq Within {name}", w["r2_cv_nested"], f"within/pooled_roles/{name}/r2_cv_nested"),
                     m.number(f"Perm Within {name}", w["permutation_p"], f"within/pooled_roles/{name}/permutation_p",
                              kind="p")] if w else ["--", "--"])
        rows.append(row)
    caption = (f"Predicting {code(a.target)}: every registered predictor on each feature set, the choice among them "
               "judged by nested cross-validation (the choice repeated inside every fold) and a permutation test "
               "(the whole choice re-run on shuffled targets).")
    return table("ll" + "r" * (len(header) - 2), header, rows, caption, "tab:gp-predictors", groups=[len(rows) - 1])


def settings_table(a: Analysis, doc: dict, m: Macros) -> str:
    """Per setting: n, mean over seeds and its 95 % interval; the best per level (by the mean) in bold."""
    entries = doc["settings"]
    keys = list(entries[0]["settings"]) if entries else []
    grouped = doc["within"] is not None
    header = ([escape(doc["within"]["column"])] if grouped else []) + [code(k) for k in keys] + \
        ["$n$", f"Mean {code(a.target)}", f"{level(m)} CI"]
    rows, groups, shown = [], [], {}
    for k, e in enumerate(entries):
        shown[e["level"]] = shown.get(e["level"], 0) + 1
        if shown[e["level"]] > MAX_SETTINGS:
            continue
        if rows and grouped and e["best"]:
            groups.append(len(rows))
        path = f"settings/{k}"
        mean = m.number(f"Setting Mean {k}", e["mean"], f"{path}/mean", decimals=3)
        lo = m.number(f"Setting Low {k}", e["ci_low"], f"{path}/ci_low", decimals=3)
        hi = m.number(f"Setting High {k}", e["ci_high"], f"{path}/ci_high", decimals=3)
        cells = ([m.text(f"Level {e['level']}", e["level"])] if grouped else [])
        cells += [m.number(f"Setting {k} {s}", v, f"{path}/settings/{s}", kind="g") for s, v in e["settings"].items()]
        cells += [m.number(f"Setting N {k}", e["n"], f"{path}/n", kind="int"), mean,
                  f"[{lo}, {hi}]" if "--" not in (lo, hi) else "--"]
        rows.append([f"\\textbf{{{c}}}" for c in cells] if e["best"] else cells)
    caption = (f"Per setting: mean {code(a.target)} over its seeds with the {level(m)} $t$-interval of the mean and "
               "the number of seeds $n$ (no interval with one seed). Bold: the best setting by its mean over seeds"
               + (" within each level" if grouped else "") + ", not by its luckiest seed"
               + (f"; at most {m.number('Max Settings', MAX_SETTINGS, '', kind='int')} settings per level are shown."
                  if len(rows) < len(entries) else "."))
    if entries and max(e["n"] for e in entries) == 1:
        caption += " Every setting ran with one seed: their order is within calibration noise, not a result."
    if doc["best_vs_runner_up_p"] is not None:
        p = m.number("Best Welch P", doc["best_vs_runner_up_p"], "best_vs_runner_up_p", kind="p")
        caption += f" Best against runner-up: Welch $t$-test $p = {p}$."
    return table("l" * (len(header) - 3) + "rrr", header, rows, caption, "tab:gp-settings", groups=groups)


def tasks_table(a: Analysis, doc: dict, m: Macros) -> str | None:
    """Per task and metric (acc, acc_norm): dense and pruned accuracy; None without task columns."""
    tasks = doc["tasks"]
    if not tasks:
        return None
    levels = list(tasks[0].get("levels") or {})
    best = any(t["pruned_best"] is not None for t in tasks)
    header = ["Task", "Metric", "Dense", "Pruned (mean)"] + (["Pruned (best setting)"] if best else []) + \
        [f"{escape(doc['within']['column'])} = {m.text(f'Level {lv}', lv)}" for lv in levels]
    rows = []
    for k, t in enumerate(tasks):
        path = f"tasks/{k}"
        key = f"{t['metric']} {t['task']}"
        row = [code(t["task"]), code(t["metric"]), m.number(f"Dense {key}", t["dense"], f"{path}/dense", decimals=3),
               m.number(f"Pruned {key}", t["pruned_mean"], f"{path}/pruned_mean", decimals=3)]
        if best:
            row.append(m.number(f"Pruned Best {key}", t["pruned_best"], f"{path}/pruned_best", decimals=3))
        row += [m.number(f"Pruned {key} At {lv}", t["levels"][lv], f"{path}/levels/{lv}", decimals=3) for lv in levels]
        rows.append(row)
    caption = (r"Zero-shot accuracy per task, dense and pruned. \texttt{acc}: the share of items whose correct answer "
               r"has the highest log-likelihood; \texttt{acc\_norm}: the same with log-likelihoods divided by the "
               "answers' length in bytes (lm-evaluation-harness). Pruned: the mean over the analysed trials.")
    return table("ll" + "r" * (len(header) - 2), header, rows, caption, "tab:gp-tasks")


def within_table(a: Analysis, doc: dict, m: Macros) -> str | None:
    """Per level of the grouping: each feature's ρ within that level alone."""
    within = doc["within"]
    if not within:
        return None
    levels = list(within["levels"])
    header = ["Feature", *(f"{escape(within['column'])} = {m.text(f'Level {lv}', lv)}" for lv in levels)]
    rows = []
    for name in doc["correlations"]:
        cells = [m.number(f"Rho {name} At {lv}", within["levels"][lv]["correlations"].get(name, {}).get("spearman"),
                          f"within/levels/{lv}/correlations/{name}/spearman") for lv in levels]
        if any(c != "--" for c in cells):
            rows.append([code(name), *cells])
    ns = ", ".join(f"{m.text(f'Level {lv}', lv)}: $n = "
                   f"{m.number(f'Units At {lv}', within['levels'][lv]['units'], f'within/levels/{lv}/units', kind='int')}$"
                   for lv in levels)
    caption = f"Spearman {RHO} of each feature with {code(a.target)} within each level of {code(within['column'])} ({ns})."
    return table("l" + "r" * len(levels), header, rows, caption, "tab:gp-within")


def lomo_table(a: Analysis, doc: dict, m: Macros) -> str | None:
    """Leave-one-model-out R² of the exported predictor."""
    lomo = doc["lomo"]
    if not lomo:
        return None
    rows = [[code(name), m.number(f"Lomo N {name}", e["n"], f"lomo/per_model/{name}/n", kind="int"),
             m.number(f"Lomo Rsq {name}", e["r2"], f"lomo/per_model/{name}/r2")] for name, e in lomo["per_model"].items()]
    rows.append(["all held-out rows", "", m.number("Lomo Rsq", lomo["r2"], "lomo/r2")])
    rows.append(["other models' mean", "", m.number("Lomo Baseline", lomo["baseline_r2"], "lomo/baseline_r2")])
    caption = (f"Leave-one-model-out: the exported predictor ({code(lomo['predictor'])}) fitted without a model and "
               "scored on that model's trials ($R^2$ on its own trials, and over all held-out trials).")
    return table("lrr", ["Held-out model", "$n$", "$R^2$"], rows, caption, "tab:gp-lomo", groups=[len(rows) - 2])
