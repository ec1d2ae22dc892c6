"""Model tests run torch with one intra-op thread."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _one_thread_here(one_thread: None) -> None:
    """Every model test: ``one_thread`` (tests/conftest.py)."""
