"""A trial's outcome: named fields, and the user attrs (hence CSV cells) the study stores of it."""

from __future__ import annotations

import pytest

from gradprune.search.trial import TrialOutcome, failed_outcome


def test_a_complete_trial_stores_success_metrics_and_status_only():
    out = TrialOutcome({"acc_mean": 0.5}, True, "", 1.23456)
    assert out.status == "complete"
    assert out.user_attrs() == {"success": True, "error": "", "metrics": {"acc_mean": 0.5}, "duration_s": 1.235,
                                "status": "complete"}  # no `evaluated`: the table reads it as True


def test_a_stopped_or_failed_trial_is_stored_as_not_evaluated():
    pruned = TrialOutcome({"acc_mean_at_fraction": 0.4}, True, "", 2.0, stopped="pruned", evaluated=False)
    assert pruned.user_attrs()["status"] == "pruned" and pruned.user_attrs()["evaluated"] is False
    screened = TrialOutcome({}, True, "", 1.0, stopped="screened", evaluated=False, extra={"screen_role": "screened"})
    assert screened.user_attrs()["extra"] == {"screen_role": "screened"}
    failed = failed_outcome(RuntimeError("boom\nsecond line"), t0=0.0)
    assert (failed.success, failed.error, failed.metrics, failed.status) == (False, "RuntimeError: boom", {}, "failed")
    assert failed.user_attrs()["evaluated"] is False


def test_a_misspelled_field_is_an_error_not_a_silent_none():
    with pytest.raises(AttributeError):
        TrialOutcome({}, True, "", 0.0).stoped  # noqa: B018
