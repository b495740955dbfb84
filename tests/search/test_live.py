"""A real search off a terminal: one line per stage of each trial, and an ETA from the first finished trial."""

from __future__ import annotations

import re

from gradprune.cli import main


def test_search_log_shows_stages_and_eta(write_search, capsys):
    path = write_search({"calibration.seq_len": [8, 16]})
    assert main(["search", str(path)]) == 0
    out = capsys.readouterr().out
    for n in (0, 1):
        lines = [ln.removeprefix(f"trial {n}: ") for ln in out.splitlines() if ln.startswith(f"trial {n}: ")]
        assert [ln.split()[0] for ln in lines] == ["loading", "calibrating", "pruning"]  # eval.run=none
        assert lines[1] == "calibrating 0/2"  # one line per stage, not one per micro-batch
    finished = re.findall(r"^trial \d complete: .*; (\d)/2 done, ETA (\S+)", out, flags=re.M)
    assert finished[0][0] == "1" and re.fullmatch(r"\d:\d\d:\d\d", finished[0][1])
    assert finished[1] == ("2", "0:00:00")
