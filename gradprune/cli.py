"""Command line: ``gradprune run | search | analyze | predict | validate | plan-memory | ls``.

Heavy libraries are imported inside each command so ``--help``, ``validate`` and ``ls`` stay fast.
A GradpruneError is printed as one line (no traceback) and exits with code 2.
"""

from __future__ import annotations

import argparse
import sys
import warnings

from gradprune.errors import GradpruneError, GradpruneWarning
from gradprune.original_names import ORIGINAL_KEYS

# --run_evaluation took a yes/no; eval.run names what to evaluate
_RUN_EVALUATION = {"true": "all", "yes": "all", "1": "all", "false": "none", "no": "none", "0": "none"}


def original_flag_overrides(args: argparse.Namespace) -> list[str]:
    """The original tool's flags given on the command line, as ``key=value`` overrides (before the
    user's own overrides, which win)."""
    out = []
    for flag, key in ORIGINAL_KEYS.items():
        value = getattr(args, flag, None)
        if value is None:
            continue
        if flag == "run_evaluation":
            value = _RUN_EVALUATION.get(str(value).lower(), value)
        out.append(f"{key}={value}")
    return out


def _cmd_run(args: argparse.Namespace) -> int:
    from gradprune.run import run_from_cli

    aliases = original_flag_overrides(args)
    if aliases:
        from rich.console import Console

        from gradprune.progress import print_plain

        print_plain(Console(stderr=True), "note: original flags as recipe keys: " + " ".join(aliases))
    return run_from_cli(args.recipe, [*aliases, *args.overrides], overwrite=args.overwrite)


def _unknown_run_option(extra: list[str], command: str = "run") -> str:
    """The message for options ``gradprune run`` (``search``, ``validate``) does not know (recipe keys are
    ``key=value``)."""
    flag, _, value = extra[0].partition("=")
    name = flag.lstrip("-")
    if "." in name:  # --pruning.ratio 0.3
        return f"unknown option {flag}: set recipe keys as key=value: {name}={value or '...'}"
    own = {"run": "--overwrite and ", "validate": "--data and "}.get(command, f"see gradprune {command} --help; ")
    return (f"unknown option {flag}: recipe keys are set as key=value overrides (e.g. pruning.ratio=0.3); "
            f"options: {own}the original tool's --{', --'.join(ORIGINAL_KEYS)}")


# the commands that read a recipe: they take the original tool's flags and --config FILE for the recipe
_RECIPE_COMMANDS = ("run", "search", "validate")


def _config_as_recipe(argv: list[str]) -> list[str]:
    """``gradprune run|search|validate --config x.yaml ...`` (the original tool's habit): the file becomes
    the recipe argument."""
    if not argv or argv[0] not in _RECIPE_COMMANDS:
        return argv
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            return [argv[0], argv[i + 1], *argv[1:i], *argv[i + 2:]]
        if arg.startswith("--config="):
            return [argv[0], arg.partition("=")[2], *argv[1:i], *argv[i + 1:]]
    return argv


def _cmd_search(args: argparse.Namespace) -> int:
    from gradprune.search.command import search_command

    # the original tool's flags override the base recipe of every trial; --output_name names the search's folder
    aliases = [a.replace("output.dir=", "output_dir=", 1) for a in original_flag_overrides(args)]
    args.overrides = [*aliases, *args.overrides]
    return search_command(args.recipe, args.overrides, storage=args.storage, output_dir=args.output_dir,
                          n_trials=args.n_trials, overwrite=args.overwrite, retry=args.retry_failed,
                          gpus=args.gpus, argv=args.argv)


def _cmd_analyze(args: argparse.Namespace) -> int:
    from gradprune.analysis.command import analyze_command

    return analyze_command(args.csv, target=args.target, output_dir=args.output_dir, seed=args.seed,
                           overwrite=args.overwrite, by=args.by, paper=args.paper, include=args.include)


def _cmd_predict(args: argparse.Namespace) -> int:
    from gradprune.analysis.command import predict_command

    return predict_command(args.model, args.inputs, output=args.output)


def _cmd_validate(args: argparse.Namespace) -> int:
    from gradprune.inspection import validate_command

    return validate_command(args.recipe, [*original_flag_overrides(args), *args.overrides], data=args.data)


def _cmd_plan_memory(args: argparse.Namespace) -> int:
    from gradprune.inspection import plan_memory_command

    return plan_memory_command(args.recipe, args.overrides, device_memory=args.device_memory, gpus=args.gpus,
                               model_config=args.model_config)


def _cmd_ls(args: argparse.Namespace) -> int:
    from gradprune.inspection import ls_command

    return ls_command(args.family)


def _int_at_least(minimum: int):
    """An argparse type: an int >= ``minimum`` (a bad value is a usage error, exit 2, before any work)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value

    return parse


def one_line(message: str) -> str:
    """A message on one line: some library errors we quote span several lines."""
    return " ".join(part.strip() for part in message.splitlines() if part.strip())


def _warning_printer(show):
    """``warnings.showwarning`` that prints a GradpruneWarning (about the user's input) as one ``warning:``
    line without a source location, and hands every other warning to ``show``."""

    def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
        if issubclass(category, GradpruneWarning):
            print(f"warning: {one_line(str(message))}", file=sys.stderr)
        else:
            show(message, category, filename, lineno, file, line)

    return show_warning


def _add_original_flags(parser: argparse.ArgumentParser) -> None:
    orig = parser.add_argument_group("the original tool's flags (aliases of recipe keys; --config FILE: the recipe)")
    for flag, key in ORIGINAL_KEYS.items():
        extra = {"nargs": "?", "const": "all"} if flag == "run_evaluation" else {}
        orig.add_argument(f"--{flag}", f"--{flag.replace('_', '-')}", dest=flag, metavar="V",
                          help=f"= {key}=V" + (" (alone: all; true/false → all/none)" if extra else ""), **extra)


def build_parser() -> argparse.ArgumentParser:
    """The argparse tree of every command."""
    p = argparse.ArgumentParser(prog="gradprune", description="Gradient-based structured pruning of LLMs.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("run", help="run one pruning experiment from a recipe")
    r.add_argument("recipe", help="recipe YAML file")
    r.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. pruning.ratio=0.3")
    r.add_argument("--overwrite", action="store_true", help="replace results already in output.dir")
    _add_original_flags(r)
    r.set_defaults(func=_cmd_run)

    s = sub.add_parser("search", help="run a grid (or sampled) search over recipe keys, resumably")
    s.add_argument("recipe", help="search recipe YAML file")
    s.add_argument("overrides", nargs="*", help="dotted key=value overrides of the search recipe")
    s.add_argument("--storage", help="Optuna storage URL shared by workers (default: journal file in the output dir)")
    s.add_argument("--output_dir", "--output-dir", dest="output_dir", help="override the search's output dir")
    s.add_argument("--n_trials", "--n-trials", dest="n_trials", type=_int_at_least(1),
                   help="stop this worker after N trials (default: until the grid is done)")
    s.add_argument("--overwrite", action="store_true",
                   help="delete the results of another (or a damaged) search in the output dir and start over")
    s.add_argument("--retry-failed", "--retry_failed", dest="retry_failed", action="store_true",
                   help="run again the points whose latest attempt failed; finished points are kept")
    _add_original_flags(s)
    s.add_argument("--gpus", metavar="all|0,1,3",
                   help="one worker process per GPU (each sees only its own), sharing the study and the results")
    s.set_defaults(func=_cmd_search)

    a = sub.add_parser("analyze", help="correlations, figures, report and prediction model from a search CSV")
    a.add_argument("csv", nargs="+", help="search_results.csv (several: combined in one analysis)")
    a.add_argument("--target", default="acc_mean", help="column to explain (default acc_mean)")
    a.add_argument("--output_dir", "--output-dir", dest="output_dir", help="default: beside the CSV")
    a.add_argument("--seed", type=_int_at_least(0), default=0, help="seed of the bootstrap intervals")
    a.add_argument("--overwrite", action="store_true", help="replace analysis files already in the output dir")
    a.add_argument("--include", action="append", default=[], metavar="COLUMN",
                   help="use a numeric column gradprune does not record (ignored by default) as a gradient "
                        "statistic; repeat it, or --include all")
    a.add_argument("--by", metavar="COLUMN", help="also judge everything within each level of pruning_ratio, "
                   "model or a column (default: pruning_ratio where the rows hold several; none: off)")
    a.add_argument("--paper", action=argparse.BooleanOptionalAction, default=True,
                   help="write paper/ (LaTeX tables, numbers.tex, method and result text, PDF figures)")
    a.set_defaults(func=_cmd_analyze)

    pr = sub.add_parser("predict", help="apply a prediction_model.json to runs (run.json or a CSV)")
    pr.add_argument("model", help="prediction_model.json")
    pr.add_argument("inputs", nargs="+", help="run.json files or CSV files of runs")
    pr.add_argument("--output", help="write predictions to this CSV")
    pr.set_defaults(func=_cmd_predict)

    v = sub.add_parser("validate", help="check a recipe (or search recipe) without loading a model")
    v.add_argument("recipe")
    v.add_argument("overrides", nargs="*")
    v.add_argument("--data", action="store_true",
                   help="also load every data set (calibration, perplexity, tasks) and the tokenizer, and check "
                        "the output dir and the accelerator: everything `run` checks before loading the weights")
    _add_original_flags(v)
    v.set_defaults(func=_cmd_validate)

    pm = sub.add_parser("plan-memory", help="print a recipe's memory plan: each stage's peak, and whether it fits")
    pm.add_argument("recipe")
    pm.add_argument("overrides", nargs="*")
    pm.add_argument("--device-memory", "--device_memory", dest="device_memory", metavar="SIZE",
                    help="plan for GPUs with this much free memory (e.g. 80GiB) instead of this machine's device")
    pm.add_argument("--gpus", type=_int_at_least(1), default=1,
                    help="with --device-memory: how many such GPUs (FSDP and the spread evaluation use them)")
    pm.add_argument("--model-config", "--model_config", dest="model_config", metavar="CONFIG_JSON",
                    help="plan for the model this config.json describes instead of the recipe's model")
    pm.set_defaults(func=_cmd_plan_memory)

    ls = sub.add_parser("ls", help="list registered plugins")
    ls.add_argument("family", nargs="?", choices=["importance", "normalizers", "collectors", "predictors", "data",
                                                    "recovery", "loggers"])
    ls.set_defaults(func=_cmd_ls)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``gradprune`` console script."""
    parser = build_parser()
    argv = _config_as_recipe(sys.argv[1:] if argv is None else list(argv))
    args, extra = parser.parse_known_args(argv)
    args.argv = list(argv)  # --gpus starts workers with this command line
    if args.command in _RECIPE_COMMANDS:  # overrides after an option (`run r.yaml --pruning_ratio 0.2 a.b=1`)
        args.overrides += [x for x in extra if not x.startswith("-")]
        extra = [x for x in extra if x.startswith("-")]
    if extra:
        if args.command in _RECIPE_COMMANDS:  # argparse would print the top-level usage, nothing about key=value
            sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
            sub.choices[args.command].error(_unknown_run_option(extra, args.command))
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _warning_printer(warnings.showwarning)
            return int(args.func(args) or 0)
    except GradpruneError as exc:
        from rich.console import Console
        from rich.text import Text

        console = Console(stderr=True, highlight=False, soft_wrap=True)
        for line in exc.lines():  # one line per problem (a recipe names all of its problems at once)
            # Text(), not markup: messages quote user input, which may contain [brackets]
            console.print(Text("error: ", style="bold red") + Text(one_line(line)))
        return exc.exit_code  # 2: bad input; 1: results that could not be written
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
