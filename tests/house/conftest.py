"""The house tier: checks on the source itself (lint, types), against a shrinking baseline."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items):
    for item in items:
        if "/house/" in str(item.fspath):
            item.add_marker(pytest.mark.house)
