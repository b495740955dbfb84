"""LaTeX for the paper folder: escaping any string, numbers as macros, booktabs tables.

Everything compiles with a basic TeX installation (article class, booktabs, graphicx): no siunitx, no
packages for Greek letters or Unicode; every character outside ASCII is written as a LaTeX command.
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

PREFIX = "gp"
_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
             "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
             "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}"}
_UNICODE = {"ρ": r"$\rho$", "−": "$-$", "≈": r"$\approx$", "×": r"$\times$", "²": r"$^{2}$", "≤": r"$\leq$",
            "≥": r"$\geq$", "±": r"$\pm$", "–": "--", "—": "---", "→": r"$\rightarrow$", "’": "'", "‘": "`",
            "“": "``", "”": "''", "…": r"\ldots{}", "α": r"$\alpha$", "β": r"$\beta$", "σ": r"$\sigma$",
            "μ": r"$\mu$", "Δ": r"$\Delta$", "√": r"$\surd$", "·": r"$\cdot$", "°": r"$^{\circ}$",
            "\u00a0": "~", "\u2009": r"\,", "%": r"\%"}
_DIGITS = ["Zero", "One", "Two", "Three", "Four", "Five", "Six", "Seven", "Eight", "Nine"]


def escape(text: Any) -> str:
    """``text`` as LaTeX that prints it: specials escaped (``grad_norm_ratio`` → ``grad\\_norm\\_ratio``),
    known Unicode as commands, other non-ASCII letters without their accents, the rest as ``?``."""
    out = []
    for ch in str(text):
        if ch in _SPECIALS:
            out.append(_SPECIALS[ch])
        elif ch in _UNICODE:
            out.append(_UNICODE[ch])
        elif ord(ch) < 128:
            out.append(ch if ch.isprintable() else " ")
        else:
            plain = unicodedata.normalize("NFKD", ch).encode("ascii", "ignore").decode()
            out.append(escape(plain) if plain else "?")
    return "".join(out)


def code(name: Any) -> str:
    """A column or recipe name in typewriter type (``\\texttt{grad\\_norm\\_ratio}``)."""
    return r"\texttt{" + escape(name) + "}"


def camel(text: Any) -> str:
    """Letters only, CamelCase (a TeX control word): ``grad_norm_ratio`` → ``GradNormRatio``, ``0.2`` →
    ``ZeroTwo``, ``q90`` → ``QNineZero``."""
    words = re.findall(r"[A-Za-z]+|[0-9]", unicodedata.normalize("NFKD", str(text)))
    return "".join(_DIGITS[int(w)] if w.isdigit() else w[:1].upper() + w[1:] for w in words) or "X"


def fmt_value(v: float, decimals: int) -> str:
    """``v`` rounded to ``decimals`` (ASCII minus; a non-zero value that would round to 0 keeps one
    significant digit, so an interval never seems to end at exactly 0)."""
    text = f"{v:.{decimals}f}"
    if v != 0 and float(text) == 0:
        text = f"{v:.1g}" if abs(v) >= 1e-4 else f"{v:.0e}"
    return "0" + text[text.index("."):] if v == 0 and "." in text and text.startswith("-") else text


def fmt_p_value(p: float) -> str:
    """A p-value for a paper: two significant digits, ``<0.001`` below 0.001."""
    return "<0.001" if p < 0.001 else f"{p:.2g}"


def tex_number(text: str) -> str:
    """A formatted number as LaTeX that reads right in text and in math (``$\\rho = \\gpRho{}$``): a minus
    sign or ``<`` puts it in ``\\ensuremath``."""
    return f"\\ensuremath{{{text}}}" if text[:1] in "-<" else text


@dataclass
class Macro:
    """One ``\\newcommand``: its name, the LaTeX it expands to, the value, and where the value comes from
    (a path into analysis.json; empty for text)."""

    name: str
    tex: str
    value: Any
    source: str = ""


@dataclass
class Macros:
    """Every number (and recipe string) the paper's text and tables use, each a macro with a unique name."""

    items: dict[str, Macro] = field(default_factory=dict)

    def _unique(self, name: str) -> str:
        base, k = name, 1
        while name in self.items:
            k += 1
            name = base + "V" + camel(str(k))
        return name

    def number(self, key: str, value: float | int | None, source: str, decimals: int = 2, kind: str = "") -> str:
        """A macro for a number (``kind``: "p" for p-values, "int" for counts); returns ``\\gpName`` or
        ``--`` where the value is missing."""
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            return "--"
        if kind == "p":
            text = fmt_p_value(float(value))
        elif kind == "int":
            text = str(int(value))
        elif kind == "g":
            text = f"{float(value):g}"
        else:
            text = fmt_value(float(value), decimals)
        return self.add(key, tex_number(text), value, source)

    def text(self, key: str, value: Any, as_code: bool = False) -> str:
        """A macro for a string (escaped; typewriter type with ``as_code``)."""
        return self.add(key, code(value) if as_code else escape(value), str(value))

    def add(self, key: str, tex: str, value: Any, source: str = "") -> str:
        """Register a macro for ``key`` (made a unique control word) and return its use; the same key with
        the same content again reuses the macro."""
        name = PREFIX + camel(key)
        same = self.items.get(name)
        if same is None or (same.tex, same.source) != (tex, source):
            name = self._unique(name)
            self.items[name] = Macro(name, tex, value, source)
        return "\\" + name + "{}"

    def tex(self, header: str) -> str:
        """numbers.tex: one ``\\newcommand`` per macro."""
        lines = [f"% {line}" for line in header.splitlines()]
        lines += [f"\\newcommand{{\\{m.name}}}{{{m.tex}}}" for m in self.items.values()]
        return "\n".join(lines) + "\n"

    def index(self) -> dict[str, Any]:
        """numbers.json: macro → its LaTeX, value and source in analysis.json."""
        return {m.name: {"tex": m.tex, "value": m.value, "source": m.source} for m in self.items.values()}


def table(spec: str, header: list[str], rows: list[list[str]], caption: str, label: str,
          groups: list[int] | None = None, wide: bool = False) -> str:
    """A booktabs table in a floating ``table`` (``table*`` when ``wide``); ``groups``: row indices before
    which a thin rule separates groups."""
    env = "table*" if wide else "table"
    lines = [f"\\begin{{{env}}}[tbp]", "\\centering", "\\small", f"\\caption{{{caption}}}", f"\\label{{{label}}}",
             f"\\begin{{tabular}}{{{spec}}}", "\\toprule", " & ".join(header) + " \\\\", "\\midrule"]
    for k, row in enumerate(rows):
        if groups and k in groups and k > 0:
            lines.append("\\midrule")
        lines.append(" & ".join(row) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", f"\\end{{{env}}}"]
    return "\n".join(lines) + "\n"
