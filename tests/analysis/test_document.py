"""Report rendering: wrapped text keeps ``name = value`` together; Markdown tables escape stars."""

from __future__ import annotations

from gradprune.analysis.document import Bullets, Section, Table, fmt_ci, fmt_p, fmt_r, to_markdown, to_text


def test_wrapping_never_splits_a_name_from_its_value():
    filler = "word " * 17
    for k in range(12):
        text = to_text("t", [Section("s", [Bullets([filler + "x" * k + " ICC = 0.9123: more words " * 3])])])
        assert all(not line.rstrip().endswith(("ICC", "ICC =")) for line in text.splitlines())
        assert "ICC = 0.9123" in text


def test_tables_align_and_markdown_escapes():
    t = Table(["feature", "ρ", ""], [["grad_norm_ratio", "-0.9737", "***"], ["ppl", "0.1", ""]], "lrl")
    text = to_text("title", [Section("Tables", [t])])
    lines = text.splitlines()
    assert any(line.startswith("grad_norm_ratio  -0.9737  ***") for line in lines)
    assert all(line == line.rstrip() for line in lines)
    md = to_markdown("title", [Section("Tables", ["para", t])])
    assert "| grad_norm_ratio | -0.9737 | \\*\\*\\* |" in md and "| :--- | ---: | :--- |" in md


def test_number_formats():
    assert fmt_r(-0.97374) == "-0.9737" and fmt_r(float("nan")) == "–"
    assert fmt_p(0.01234) == "0.0123" and fmt_p(1.2e-7) == "1.2e-07"
    assert fmt_ci((-0.5, 0.25)) == "[-0.500, 0.250]" and fmt_ci((float("nan"), 1.0)) == "–"
    # a bound that is not zero is never printed as 0.000 (only an exact 0 is)
    assert fmt_ci((-0.0003, 0.5)) == "[-0.0003, 0.500]" and fmt_ci((0.0, 0.00002)) == "[0.000, 2e-05]"
