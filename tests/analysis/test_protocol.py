"""method.tex from the trials' recipes: model, calibration, grid, evaluation protocol and versions."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from gradprune.analysis.latex import Macros
from gradprune.analysis.protocol import read_protocol
from gradprune.analysis.sources import read_provenance
from gradprune.recipe import Recipe


def test_method_facts_come_from_the_trials_run_json_and_search_json(tmp_path):
    recipe = Recipe().to_dict()
    recipe["model"].update(name_or_path="mistralai/Mistral-7B-v0.3", revision="abc123")
    for n, seq_len in enumerate((16, 64)):
        trial = tmp_path / "trials" / f"trial_{n}"
        trial.mkdir(parents=True)
        rec = {**{"recipe": json.loads(json.dumps(recipe))}, "versions": {"lm_eval": "0.4.13", "torch": "2.13.0"},
               "eval": {"ppl": {"datasets": {"wikitext2": {"source": "hub data set wikitext@main, test"}}}}}
        rec["recipe"]["calibration"]["seq_len"] = seq_len
        (trial / "run.json").write_text(json.dumps(rec))
    (tmp_path / "search.json").write_text(json.dumps({"spec": {"grid": {"calibration.seq_len": [16, 64]},
                                                               "replicates": 3}}))
    rows = pd.DataFrame({"acc_mean": np.linspace(0.5, 0.6, 4)})
    proto = read_protocol([read_provenance(tmp_path / "search_results.csv")], rows)
    assert proto.from_recipes and proto.facts["model"] == ["mistralai/Mistral-7B-v0.3"]
    assert proto.facts["seq_len"] == [16, 64] and proto.facts["revision"] == ["abc123"]
    assert proto.facts["lm_eval"] == ["0.4.13"] and proto.grid == {"calibration.seq_len": [16, 64]}
    assert proto.replicates == 3 and proto.facts["ppl_sources"] == ["wikitext2 (hub data set wikitext@main, test)"]

    from types import SimpleNamespace

    from gradprune.analysis.paper_text import method_tex

    m = Macros()
    a = SimpleNamespace(replicates=None, within=None)
    text = method_tex(a, proto, m)
    values = {mac.value for mac in m.items.values()}
    assert {"mistralai/Mistral-7B-v0.3", "abc123", "16, 64", "0.4.13", "2.13.0"} <= values
    assert "We prune \\gpModel{} (revision \\gpRevision{}" in text
    assert "\\texttt{acc\\_norm}" in text and "Perplexity on \\gpPplData{}" in text
