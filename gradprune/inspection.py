"""``gradprune validate`` and ``gradprune ls``: fast commands that load no model (``validate --data``
loads the data sets, never the weights)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from gradprune.recipe import read_yaml


def validate_command(path: str, overrides: list[str], data: bool = False) -> int:
    """Check a recipe (or a search recipe) and print what it resolves to.

    Without ``data`` it stays fast and loads no data: the schema, plugins and, where the model's config is
    local or cached, the bounds the config sets (layers, seq_len, architecture, reachable ratio). With
    ``data`` it runs the whole preflight of ``gradprune run``: every data set, the tokenizer, the output
    dir and the accelerator too, naming every problem in one error.
    """
    from gradprune.preflight import preflight

    console = Console()
    checks = {"data": data, "hardware": data, "config_required": data}
    raw = read_yaml(path)
    if "search" in raw or "grid" in raw:
        from gradprune.search.command import preflight_search
        from gradprune.search.spec import load_search_spec

        spec = load_search_spec(path, overrides)
        report = preflight_search(spec, spec.output_dir if data else None, **checks)
        console.print(Text("ok", style="green") + Text(f" {path}: search over {spec.describe()}"))
    else:
        from gradprune.recipe import load_recipe

        r = load_recipe(path, overrides)
        report = preflight(r, out_dir=r.output.dir if data else None, **checks)
        # Text, not markup: paths, model names and params are the user's and may hold [brackets]
        console.print(Text("ok", style="green") + Text(
            f" {path}: {r.model.name_or_path}, {r.importance.name} ({r.importance.params or 'defaults'}), "
            f"normalizer {r.normalizer.name}, {r.pruning.scope} ratio {r.pruning.ratio}, seq_len "
            f"{r.calibration.seq_len} × {r.calibration.num_samples} samples, eval {r.eval.run}"))
    console.print(Text(report.describe(), style="dim"))
    for warning in report.warnings:
        console.print(Text(f"warning: {warning} (its trials will be failed rows)", style="yellow"))
    return 0


def ls_command(family: str | None) -> int:
    """List every registry (or one) with each plugin's origin and description."""
    from gradprune.plugins import FAMILIES

    console = Console()
    for name, reg in FAMILIES.items():
        if family and name != family:
            continue
        t = Table(title=f"{name} — {reg.description} (entry points: {reg.entry_point_group})", header_style="bold")
        t.add_column("name")
        t.add_column("origin")
        t.add_column("description")
        for plugin in reg.names():
            e = reg.entry(plugin)
            # Text, not markup: "[failed to load]" and plugin docstrings must print as written
            t.add_row(Text(plugin), Text(e.origin), Text(reg.describe(plugin)))
        console.print(t)
    return 0
