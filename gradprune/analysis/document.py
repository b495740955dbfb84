"""A small document model (sections of paragraphs, bullet lists and tables) rendered as plain text
and as Markdown, and the number formats the report uses.
"""

from __future__ import annotations

import math
import re
import textwrap
from dataclasses import dataclass, field

WIDTH = 100


def fmt_r(r: float) -> str:
    """A coefficient with 4 decimals and an ASCII minus (greppable; equals scipy's to 1e-4)."""
    return f"{r:.4f}" if math.isfinite(r) else "–"


def fmt_p(p: float) -> str:
    """A p-value: 4 decimals, scientific notation below 0.001, "< 1e-16" where it underflowed to 0."""
    if not math.isfinite(p):
        return "–"
    if p == 0.0:
        return "< 1e-16"
    return f"{p:.4f}" if p >= 0.001 else f"{p:.1e}"


def p_is(label: str, p: float) -> str:
    """``label = 0.0123`` or ``label < 1e-16`` for prose."""
    text = fmt_p(p)
    return f"{label} {text}" if text.startswith("<") else f"{label} = {text}"


def fmt_bound(v: float, decimals: int = 3) -> str:
    """A number to ``decimals`` decimals, except that a value that is not zero is never shown as zero:
    ``-0.0003`` is ``-0.0003``, not ``-0.000`` (only an exact 0 reads ``0.000``)."""
    text = f"{v:.{decimals}f}"
    if v != 0 and float(text) == 0:
        return f"{v:.1g}" if abs(v) >= 1e-4 else f"{v:.0e}"
    return "0.000" if v == 0 else text


def fmt_ci(ci: tuple[float, float]) -> str:
    """A confidence interval as [low, high] (a bound that is not zero is never printed as 0.000)."""
    lo, hi = ci
    return f"[{fmt_bound(lo)}, {fmt_bound(hi)}]" if math.isfinite(lo) and math.isfinite(hi) else "–"


def fmt_num(v: float, digits: int = 4) -> str:
    """A number with ``digits`` significant digits (– for missing)."""
    return f"{v:.{digits}g}" if isinstance(v, int | float) and math.isfinite(v) else "–"


@dataclass
class Table:
    """Headers and rows of strings; ``align`` holds one 'l' or 'r' per column."""

    headers: list[str]
    rows: list[list[str]]
    align: str = ""

    def _align(self) -> str:
        return self.align or "l" + "r" * (len(self.headers) - 1)


@dataclass
class Bullets:
    """A bullet list of paragraphs."""

    items: list[str]


@dataclass
class Section:
    """A titled section: paragraphs (str), bullet lists and tables, in order."""

    title: str
    blocks: list[str | Bullets | Table] = field(default_factory=list)


# "name = value" stays on one line when wrapped, so a reader (or grep) finds the pair together
_PAIR = re.compile(r"(\S+) (=|≈|<|>) (\S+)")


def _wrap(text: str, first: str = "", rest: str = "") -> str:
    glued = _PAIR.sub(lambda m: "\0".join(m.groups()), text)
    lines = textwrap.wrap(glued, WIDTH, initial_indent=first, subsequent_indent=rest,
                          break_long_words=False, break_on_hyphens=False)
    return "\n".join(lines).replace("\0", " ")


def _text_table(t: Table) -> str:
    widths = [max(len(h), *(len(r[i]) for r in t.rows)) if t.rows else len(h) for i, h in enumerate(t.headers)]
    align = t._align()

    def line(cells: list[str]) -> str:
        cells = [c.rjust(w) if a == "r" else c.ljust(w) for c, w, a in zip(cells, widths, align, strict=True)]
        return "  ".join(cells).rstrip()

    return "\n".join([line(t.headers), "  ".join("-" * w for w in widths), *(line(r) for r in t.rows)]).rstrip()


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("*", "\\*")  # significance stars are not emphasis


def _md_table(t: Table) -> str:
    sep = ["---:" if a == "r" else ":---" for a in t._align()]
    rows = [t.headers, sep, *t.rows]
    return "\n".join("| " + " | ".join(_md_cell(c) if r is not sep else c for c in r) + " |" for r in rows)


def to_text(title: str, sections: list[Section]) -> str:
    """Plain text: underlined headings, wrapped paragraphs, aligned tables."""
    out = [title, "=" * min(len(title), WIDTH)]
    for s in sections:
        out += ["", s.title.upper(), "-" * len(s.title)]
        for b in s.blocks:
            if isinstance(b, Table):
                out.append(_text_table(b))
            elif isinstance(b, Bullets):
                out += [_wrap(item, "- ", "  ") for item in b.items]
            else:
                out.append(_wrap(b))
            out.append("")
    return "\n".join(out).rstrip() + "\n"


def to_markdown(title: str, sections: list[Section]) -> str:
    """The same document as Markdown (pipe tables)."""
    out = [f"# {title}"]
    for s in sections:
        out += ["", f"## {s.title}", ""]
        for b in s.blocks:
            if isinstance(b, Table):
                out.append(_md_table(b))
            elif isinstance(b, Bullets):
                out += [f"- {item}" for item in b.items]
            else:
                out.append(b)
            out.append("")
    return "\n".join(out).rstrip() + "\n"
