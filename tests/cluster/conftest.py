"""Fixtures of the multi-node tests (``pytest -m cluster tests``, after ``scripts/cluster up``).

The fault tests' fixtures (services back up after each test, the replies recorder) apply here
too; every test here is marked ``cluster`` and skipped unless asked for.
"""

from __future__ import annotations

from tests.faults.conftest import _services_left_running, replies

__all__ = ["_services_left_running", "replies"]
