"""Imports follow the flow of a run: no module imports a later stage's package, and no package cycle.

Every module under gradprune/ is parsed with ``ast`` (nothing is imported); imports inside functions
count like the ones at the top. A *unit* is a sub-package (``gradprune/cut/``) or a top-level module
(``gradprune/run.py``); each unit has a stage rank below. See docs/architecture.md.
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "gradprune"

# Stage order, earliest first. A unit may import units of its own stage or of earlier ones.
# The ranks follow the real imports, which differ from the data flow in three places:
#  - importance/ and stats/ come before the calibration modules: the calibration pass (hooks.py,
#    calibration.py) feeds the estimators and collectors those packages define.
#  - prediction/ (the prediction model: feature columns, predictors, model selection) comes before
#    the drivers: search/ screens trials with it and analysis/ reports it.
#  - run.py and search/ are drivers (one run, many runs): they sit after the stages they drive;
#    analysis/ reads the search's CSV and comes after it.
STAGES: list[tuple[str, tuple[str, ...]]] = [
    # parallel: the strategy names the recipe checks (what each one does at run time: strategy.py)
    ("foundation", ("errors", "registry", "plugins", "files", "progress", "outputs", "parallel", "assets")),
    ("recipe", ("recipe", "plugin_sections", "original_names")),
    ("models (load)", ("models",)),
    ("data", ("data",)),
    # calibration_plugin: the contract of estimators and collectors; moments: the mean-gradient sums they read
    ("score definitions (importance, normalizers, collectors)",
     ("calibration_plugin", "moments", "importance", "stats")),
    # memory: the plan (from the config and the recipe's estimators) and the release of what stages allocate
    ("memory plan", ("memory",)),
    # strategy: one process, DDP or FSDP (sharding.py: FSDP2's mechanics, which only strategy.py uses)
    ("calibrate", ("hooks", "trainer", "calibration", "strategy", "sharding", "testing")),
    ("plan", ("pruning",)),
    ("cut", ("cut",)),
    ("eval", ("eval",)),
    ("recover", ("recovery",)),
    ("record", ("record", "tracking")),
    ("prediction model", ("prediction",)),
    ("run (driver of one run)", ("preflight", "stages", "run")),
    ("search (driver of many runs)", ("search",)),
    ("analyze", ("analysis",)),
    ("commands and public API", ("inspection", "cli", "__init__")),
]
RANK = {unit: i for i, (_, units) in enumerate(STAGES) for unit in units}

# (importing file, imported module): back-references allowed for now, each with the reason it stays.
# Empty: the last one (data/sources.py importing eval/hints.py) went when the hub-offline hint moved
# into data/sources.py.
ALLOWED_BACK_REFERENCES: set[tuple[str, str]] = set()


def _unit(rel: Path) -> str:
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every gradprune import in the file, top-level or in a function."""
    rel = path.relative_to(PKG)
    package = ["gradprune", *rel.parts[:-1]]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            if module == "gradprune":  # from gradprune import cut -> gradprune.cut
                found += [(node.lineno, f"gradprune.{a.name}") for a in node.names]
            else:
                found.append((node.lineno, module))
    return [(line, m) for line, m in found if m.startswith("gradprune.")]


def _edges() -> list[tuple[str, int, str, str, str]]:
    """(file, line, module, importer unit, imported unit) for every import between two units."""
    edges = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG)
        src = _unit(rel)
        for line, module in _imports(path):
            dst = module.split(".")[1]
            if dst != src:
                edges.append((rel.as_posix(), line, module, src, dst))
    return edges


def test_every_unit_has_a_stage():
    units = {_unit(p.relative_to(PKG)) for p in PKG.rglob("*.py")}
    missing = sorted(units - RANK.keys())
    assert not missing, f"add these to STAGES in {Path(__file__).name}: {missing}"


def test_no_import_of_a_later_stage():
    stage = {unit: name for name, units in STAGES for unit in units}
    bad = [
        f"gradprune/{f}:{line}: imports {module} ({stage[dst]}, a later stage than {stage[src]})"
        for f, line, module, src, dst in _edges()
        if RANK[dst] > RANK[src] and (f, module) not in ALLOWED_BACK_REFERENCES
    ]
    assert not bad, "imports against the flow:\n" + "\n".join(bad)


def test_allowed_back_references_still_exist():
    # an entry that was fixed must leave the list, or it would allow the next one silently
    present = {(f, module) for f, _, module, _, _ in _edges()}
    stale = sorted(ALLOWED_BACK_REFERENCES - present)
    assert not stale, f"remove from ALLOWED_BACK_REFERENCES (no longer imported): {stale}"


def test_no_cycle_between_units():
    graph: dict[str, set[str]] = {}
    where: dict[tuple[str, str], str] = {}
    for f, line, module, src, dst in _edges():
        graph.setdefault(src, set()).add(dst)
        where.setdefault((src, dst), f"gradprune/{f}:{line} imports {module}")
    # depth-first search; a grey node met again closes a cycle
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(u: str) -> list[str] | None:
        state[u] = 1
        stack.append(u)
        for v in sorted(graph.get(u, ())):
            if state.get(v) == 1:
                return stack[stack.index(v):] + [v]
            if v not in state and (cycle := visit(v)):
                return cycle
        stack.pop()
        state[u] = 2
        return None

    for u in sorted(graph):
        if u not in state and (cycle := visit(u)):
            steps = [where[(a, b)] for a, b in zip(cycle, cycle[1:], strict=False)]
            raise AssertionError(f"import cycle {' -> '.join(cycle)}:\n" + "\n".join(steps))
