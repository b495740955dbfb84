"""Command line: ``gradprune run | search | analyze | predict | validate | ls``.

Heavy libraries are imported inside each command so ``--help``, ``validate`` and ``ls`` stay fast.
A GradpruneError is printed as one line (no traceback) and exits with code 2.
"""

from __future__ import annotations

import argparse
import sys

from gradprune.errors import GradpruneError


def _cmd_run(args: argparse.Namespace) -> int:
    from gradprune.run import run_from_cli

    return run_from_cli(args.recipe, args.overrides, overwrite=args.overwrite)


def _cmd_search(args: argparse.Namespace) -> int:
    from gradprune.search.command import search_command

    return search_command(args.recipe, args.overrides, storage=args.storage, output_dir=args.output_dir,
                          n_trials=args.n_trials, overwrite=args.overwrite)


def _cmd_analyze(args: argparse.Namespace) -> int:
    from gradprune.analysis.command import analyze_command

    return analyze_command(args.csv, target=args.target, output_dir=args.output_dir, seed=args.seed,
                           overwrite=args.overwrite)


def _cmd_predict(args: argparse.Namespace) -> int:
    from gradprune.analysis.command import predict_command

    return predict_command(args.model, args.inputs, output=args.output)


def _cmd_validate(args: argparse.Namespace) -> int:
    from gradprune.inspect import validate_command

    return validate_command(args.recipe, args.overrides, data=args.data)


def _cmd_ls(args: argparse.Namespace) -> int:
    from gradprune.inspect import ls_command

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


def build_parser() -> argparse.ArgumentParser:
    """The argparse tree of every command."""
    p = argparse.ArgumentParser(prog="gradprune", description="Gradient-based structured pruning of LLMs.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("run", help="run one pruning experiment from a recipe")
    r.add_argument("recipe", help="recipe YAML file")
    r.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. pruning.ratio=0.3")
    r.add_argument("--overwrite", action="store_true", help="replace results already in output.dir")
    r.set_defaults(func=_cmd_run)

    s = sub.add_parser("search", help="run a grid (or sampled) search over recipe keys, resumably")
    s.add_argument("recipe", help="search recipe YAML file")
    s.add_argument("overrides", nargs="*", help="dotted key=value overrides of the search recipe")
    s.add_argument("--storage", help="Optuna storage URL shared by workers (default: journal file in the output dir)")
    s.add_argument("--output_dir", "--output-dir", dest="output_dir", help="override the search's output dir")
    s.add_argument("--n_trials", "--n-trials", dest="n_trials", type=_int_at_least(1),
                   help="stop this worker after N trials (default: until the grid is done)")
    s.add_argument("--overwrite", action="store_true", help="start over in an output dir that holds another search")
    s.set_defaults(func=_cmd_search)

    a = sub.add_parser("analyze", help="correlations, figures, report and prediction model from a search CSV")
    a.add_argument("csv", help="search_results.csv")
    a.add_argument("--target", default="acc_mean", help="column to explain (default acc_mean)")
    a.add_argument("--output_dir", "--output-dir", dest="output_dir", help="default: beside the CSV")
    a.add_argument("--seed", type=_int_at_least(0), default=0, help="seed of the bootstrap intervals")
    a.add_argument("--overwrite", action="store_true", help="replace analysis files already in the output dir")
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
    v.set_defaults(func=_cmd_validate)

    ls = sub.add_parser("ls", help="list registered plugins")
    ls.add_argument("family", nargs="?", choices=["importance", "normalizers", "collectors", "predictors", "data"])
    ls.set_defaults(func=_cmd_ls)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``gradprune`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except GradpruneError as exc:
        from rich.console import Console
        from rich.text import Text

        # Text(), not markup: messages quote user input, which may contain [brackets]
        message = Text("error: ", style="bold red") + Text(one_line(str(exc)))
        Console(stderr=True, highlight=False, soft_wrap=True).print(message)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
