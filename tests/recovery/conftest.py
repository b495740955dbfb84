"""The recovery tests use the tiny models and random plans of tests/models (the same fixtures)."""

from __future__ import annotations

from tests.models.conftest import make_model, make_plan, tokens  # noqa: F401
