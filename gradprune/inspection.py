"""``gradprune validate``, ``gradprune plan-memory`` and ``gradprune ls``: fast commands that load no model
(``validate --data`` loads the data sets, ``plan-memory`` the model's config, never the weights)."""

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


def plan_memory_command(path: str, overrides: list[str], device_memory: str | None = None, gpus: int = 1,
                        model_config: str | None = None) -> int:
    """Print the memory plan of a recipe: every stage's device peak, line by line, and whether it fits.

    ``device_memory`` (e.g. ``80GiB``): plan for a GPU with that much free memory (``gpus`` of them) instead
    of this machine's device; ``model_config``: a config.json to plan for instead of the recipe's model.
    """
    from gradprune.memory.capacity import Capacity
    from gradprune.memory.table import load_config, parse_size, plan_lines
    from gradprune.memory.watch import fit_recipe
    from gradprune.recipe import load_recipe

    recipe = load_recipe(path, overrides)
    if model_config is not None:
        config = load_config(model_config)
    else:
        from gradprune.models.loading import checked_config

        _, config = checked_config(recipe.model)
    capacity: Capacity | str = "device"
    if device_memory is not None:
        size = parse_size(device_memory)
        capacity = Capacity("cuda", f"{gpus} × GPU of {device_memory}" if gpus > 1 else f"a GPU of {device_memory}",
                            size, size, gpus)
    fitted = fit_recipe(recipe, config, capacity)
    console = Console(highlight=False, soft_wrap=True)
    console.print(f"memory plan of {path} ({model_config or recipe.model.name_or_path}):", markup=False)
    for line in plan_lines(fitted):
        console.print(line, markup=False)
    return 0 if fitted.problem is None else 2


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
