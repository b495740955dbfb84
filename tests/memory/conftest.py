"""The search fixtures, for the search-level memory tests."""

from tests.search.conftest import write_search  # noqa: F401 - a fixture, used by name
