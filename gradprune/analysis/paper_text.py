"""method.tex and results.tex: paragraphs generated from the recipes and the analysis.

The results state only what the report states, by the same rules: a correlation is a finding only when
its BH-adjusted p is below 0.05 (and, split by a grouping, when it holds within a level); a predictor
only when its choice beats shuffled targets and carries over to unseen rows; few units make it
preliminary. Every number and every recipe string is a macro of numbers.tex.
"""

from __future__ import annotations

from typing import Any

from gradprune.analysis.bootstrap import N_RESAMPLES
from gradprune.analysis.correlations import ALPHA
from gradprune.analysis.findings import SMALL_N, units
from gradprune.analysis.latex import Macros, code, escape
from gradprune.analysis.pipeline import EXPORTED, Analysis
from gradprune.analysis.protocol import Protocol
from gradprune.analysis.within import NOT_WITHIN, ONLY_WITHIN, REVERSES
from gradprune.prediction.columns import RATIO, STATISTIC
from gradprune.prediction.selection import N_PERMUTATIONS


def _values(m: Macros, key: str, values: list[Any], as_code: bool = False) -> str:
    shown = ", ".join(str(v) for v in values)
    return m.text(key, shown, as_code=as_code) if values else "(not recorded)"


def _plugin(m: Macros, key: str, sections: list[Any]) -> str:
    if not sections:
        return "(not recorded)"
    parts = []
    for s in sections:
        params = ", ".join(f"{k}={v}" for k, v in (s.get("params") or {}).items()) if isinstance(s, dict) else ""
        name = s.get("name") if isinstance(s, dict) else s
        parts.append(f"{name}" + (f" ({params})" if params else ""))
    return m.text(key, "; ".join(parts), as_code=True)


def _layers(v: Any) -> str:
    if v is None:
        return "all layers"
    start, end = v
    return f"layers [{start}, {'end' if end is None else end})"


def method_tex(a: Analysis, proto: Protocol, m: Macros) -> str:
    """The method paragraphs: model, calibration, importance and pruning, grid and seeds, evaluation,
    software, statistics."""
    f = proto.facts
    out = []
    if not proto.from_recipes:
        out.append("The recipes of these trials were not found beside the search table (no "
                   r"\texttt{search.json} or \texttt{trials/*/run.json}); what follows is what the table's columns "
                   "show.")
    model = _values(m, "Model", f.get("model", []), as_code=True)
    rev = f.get("revision") or []
    revision = (f"revision {_values(m, 'Revision', rev, as_code=True)}" if rev else
                "revision not recorded, i.e.\\ the hub's default branch when the trials ran")
    dtype = f"weights in {_values(m, 'Dtype', f['dtype'], as_code=True)}" if f.get("dtype") else ""
    out.append(f"We prune {model} ({revision}{'; ' + dtype if dtype else ''}).")
    if f.get("calibration_dataset") or f.get("seq_len"):
        data = _plugin(m, "Calibration Data", f.get("calibration_dataset", []))
        out.append(f"Calibration draws {_values(m, 'Num Samples', f.get('num_samples', []))} windows of "
                   f"{_values(m, 'Seq Len', f.get('seq_len', []))} tokens from {data}"
                   + (f" in micro-batches of {_values(m, 'Batch Size', f['batch_size'])}" if f.get("batch_size") else "")
                   + f"; calibration seeds {_values(m, 'Seeds', f.get('seed', []))}.")
    if f.get("importance"):
        out.append(f"Group importance is {_plugin(m, 'Importance', f['importance'])}, normalized per layer with "
                   f"{_plugin(m, 'Normalizer', f.get('normalizer', []))}; the gradient statistics are "
                   f"{_values(m, 'Collectors', [', '.join(c) for c in f.get('collectors', [])], as_code=True)}. "
                   f"Pruning removes {_values(m, 'Ratios', f.get('ratio', []))} of the parameters with a "
                   f"{_values(m, 'Scope', f.get('scope', []), as_code=True)} ranking, attention in "
                   f"{_values(m, 'Attention Layers', [_layers(v) for v in f.get('attention_layers', [])])} and MLP in "
                   f"{_values(m, 'Mlp Layers', [_layers(v) for v in f.get('mlp_layers', [])])}.")
    elif f.get("ratio"):
        out.append(f"Pruning ratios: {_values(m, 'Ratios', f['ratio'])}.")
    if proto.grid:
        grid = "; ".join(f"{k} in {{{', '.join(map(str, v))}}}" for k, v in proto.grid.items())
        reps = (f", each with {m.number('Replicates', proto.replicates, 'protocol/replicates', kind='int')} "
                "calibration seeds" if proto.replicates else "")
        out.append(f"The search runs the grid {m.text('Grid', grid, as_code=True)}{reps}.")
    out.append(_evaluation(m, f))
    out.append(_statistics(a, m))
    return "\n\n".join(out) + "\n"


def _evaluation(m: Macros, f: dict[str, list[Any]]) -> str:
    tasks = sorted({t for ts in f.get("tasks", []) for t in ts})
    text = []
    if tasks:
        shots = _values(m, "Num Fewshot", f.get("num_fewshot", []))
        limit = [v for v in f.get("limit", []) if v is not None]
        text.append(f"Zero-shot accuracy ({shots}-shot) on {m.text('Tasks', ', '.join(tasks), as_code=True)} with "
                    f"lm-evaluation-harness {_values(m, 'Version Lm Eval', f.get('lm_eval', []))}"
                    + (f", at most {_values(m, 'Eval Limit', limit)} items per task" if limit else "")
                    + r"; we report \texttt{acc} (the share of items whose correct answer has the highest "
                    r"log-likelihood) and, where a task defines it, \texttt{acc\_norm} (log-likelihoods divided by "
                    r"the answers' length in bytes); \texttt{acc\_mean} is the mean of \texttt{acc} over the tasks.")
    if f.get("ppl_datasets"):
        sources = f.get("ppl_sources") or [", ".join(d) for d in f["ppl_datasets"]]
        text.append(f"Perplexity on {m.text('Ppl Data', '; '.join(sources), as_code=True)} at sequence length "
                    f"{_values(m, 'Ppl Seq Len', f.get('ppl_seq_len', []))} (non-overlapping windows, exp of the mean "
                    "next-token negative log-likelihood).")
    versions = [(name, key, f.get(key, [])) for name, key in (("transformers", "transformers"), ("PyTorch", "torch"),
                                                              ("Lightning", "lightning"), ("gradprune", "gradprune"))]
    shown = ", ".join(f"{name} {_values(m, f'Version {key}', v)}" for name, key, v in versions if v)
    if shown:
        text.append(f"Software: {shown}.")
    return " ".join(text) or "The evaluation protocol was not recorded beside the table."


def _statistics(a: Analysis, m: Macros) -> str:
    alpha = m.number("Alpha", ALPHA, "", decimals=2)
    boot = m.number("Bootstrap Resamples", N_RESAMPLES, "", kind="int")
    perms = m.number("Permutations", N_PERMUTATIONS, "", kind="int")
    text = (f"Statistics: Spearman correlations with {m.number('CI Level', 95, '', kind='int')}\\,\\% percentile "
            f"bootstrap intervals ({boot} resamples), Benjamini--Hochberg adjusted; a relation is significant at "
            f"adjusted $p < {alpha}$. Every registered predictor is fitted on each feature set (settings, gradient "
            f"statistics, proxies, the pruning ratio, and combinations); the choice among them is judged by nested "
            f"cross-validation and a permutation test (at most {perms} shuffles of the targets, the whole choice "
            "re-run each time).")
    if a.replicates is not None:
        text += " Seeds of one setting are replicates: settings are compared by their mean over seeds."
    if a.within is not None:
        text += (f" Every correlation and predictor is also judged within each level of {code(a.within.grouping.column)} "
                 "(with the level as a covariate), since a relation pooled over levels mostly measures the level.")
    return text


def _corr_phrase(m: Macros, key: str, e: dict[str, Any], path: str) -> str:
    rho = m.number(f"Rho {key}", e["spearman"], f"{path}/spearman")
    lo = m.number(f"Rho {key} Low", e["spearman_ci_low"], f"{path}/spearman_ci_low")
    hi = m.number(f"Rho {key} High", e["spearman_ci_high"], f"{path}/spearman_ci_high")
    p = m.number(f"Padj {key}", e["spearman_p_bh"], f"{path}/spearman_p_bh", kind="p")
    n = m.number(f"N {key}", e["n"], f"{path}/n", kind="int")
    eq = "" if e["spearman_p_bh"] is not None and e["spearman_p_bh"] < 0.001 else "= "  # the macro reads "<0.001"
    return (f"$\\rho = {rho}$, {m.number('CI Level', 95, '', kind='int')}\\,\\% CI [{lo}, {hi}], "
            f"$p_{{\\mathrm{{BH}}}} {eq}{p}$, $n = {n}$")


def results_tex(a: Analysis, doc: dict, m: Macros) -> str:
    """The results paragraphs, by the report's rules."""
    t = code(a.target)
    out = [f"Of {m.number('Rows Total', doc['rows_total'], 'rows_total', kind='int')} trials, "
           f"{m.number('Rows Used', doc['rows_used'], 'rows_used', kind='int')} succeeded and were evaluated"
           + (f" ({m.number('Configs', doc['configs'], 'configs', kind='int')} settings with several seeds each)"
              if doc["configs"] else "") + f"; the target is {t}."]
    within = doc["within"]
    if within:
        noun = a.within.grouping.noun
        sig = {k: e for k, e in within["pooled"].items() if e["significant"]}
        if sig:
            parts = [f"{code(k)} goes with {'lower' if e['spearman'] < 0 else 'higher'} {t} "
                     f"({_corr_phrase(m, f'Within {k}', e, f'within/pooled/{k}')})" for k, e in sig.items()]
            out.append(f"At a fixed {noun}, " + "; ".join(parts) + ".")
        else:
            out.append(f"At a fixed {noun} (the {noun} as a covariate), no feature is significantly related to {t}.")
        for k, v in within["verdicts"].items():
            e, w = doc["correlations"][k], within["pooled"][k]
            pooled = _corr_phrase(m, k, e, f"correlations/{k}")
            inner = _corr_phrase(m, f"Within {k}", w, f"within/pooled/{k}")
            if v == NOT_WITHIN:
                out.append(f"Pooled over the {noun}s, {code(k)} correlates with {t} ({pooled}), but this does not "
                           f"hold within a {noun} ({inner}): it reflects the differences between the {noun}s and is "
                           "not a finding.")
            elif v == REVERSES:
                out.append(f"For {code(k)} the direction within a {noun} ({inner}) is the opposite of the pooled one "
                           f"({pooled}): the {noun} moves both (Simpson's paradox), so only the within-{noun} "
                           "direction is reported.")
            elif v == ONLY_WITHIN:
                out.append(f"{code(k)} is related to {t} only within a {noun} ({inner}).")
    else:
        sig = {k: e for k, e in doc["correlations"].items() if e["significant"]}
        if sig:
            out.append("; ".join(f"Higher {code(k)} goes with {'lower' if e['spearman'] < 0 else 'higher'} {t} "
                                 f"({_corr_phrase(m, k, e, f'correlations/{k}')})" for k, e in sig.items()) + ".")
        else:
            out.append(f"No feature is significantly related to {t} after Benjamini--Hochberg adjustment.")
    out.append(_prediction(a, doc, m))
    n, unit = units(a)
    if n < SMALL_N:
        out.append(f"With only {m.number('Units', n, '', kind='int')} {escape(unit)}, the evidence is weak and these "
                   "results are preliminary.")
    return "\n\n".join(out) + "\n"


def _prediction(a: Analysis, doc: dict, m: Macros) -> str:
    from gradprune.analysis.findings import claims_prediction

    e = doc["exported"]
    r2 = m.number(f"Rsq {EXPORTED}", e["r2_cv_nested"], "exported/r2_cv_nested")
    p = m.number(f"Perm {EXPORTED}", e["permutation_p"], "exported/permutation_p", kind="p")
    if claims_prediction(a.role_scores[EXPORTED]):
        text = (f"The prediction model ({code(e['best'])}) predicts {code(a.target)} of unseen trials with nested "
                f"cross-validated $R^2 = {r2}$ (permutation $p = {p}$).")
    else:
        text = (f"The prediction model is no better than chance (nested cross-validated $R^2 = {r2}$, permutation "
                f"$p = {p}$): these features do not detectably predict {code(a.target)}.")
    roles = doc["roles"]
    if STATISTIC in roles and RATIO in roles:
        s = m.number(f"Rsq {STATISTIC}", roles[STATISTIC]["r2_cv_nested"], f"roles/{STATISTIC}/r2_cv_nested")
        r = m.number(f"Rsq {RATIO}", roles[RATIO]["r2_cv_nested"], f"roles/{RATIO}/r2_cv_nested")
        from gradprune.analysis.findings import ratio_baseline_sentence

        beats = ratio_baseline_sentence(a).startswith("The gradient statistics beat")
        text += (f" The gradient statistics ($R^2 = {s}$) {'beat' if beats else 'do not beat'} the pruning ratio "
                 f"alone ($R^2 = {r}$)" + ("." if beats else ": what they predict across ratios, the ratio "
                                                               "predicts already."))
    return text
