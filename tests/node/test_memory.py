"""A node turns numpy's huge-page advice off in its process, unless the operator chose."""

from __future__ import annotations

import numpy as np
import pytest

from healthfed.node import memory
from healthfed.node.runtime import Node


@pytest.fixture
def switch():
    """numpy's switch, restored to what it was after the test."""
    fn = memory._numpy_switch()
    assert fn is not None, f"numpy {np.__version__} has no _set_madvise_hugepage"
    before = fn(True)
    yield fn
    fn(before)


def test_making_a_node_turns_the_advice_off(switch, monkeypatch):
    monkeypatch.delenv(memory.ENV_VAR, raising=False)
    Node("site", {})
    assert switch(True) is False  # the previous value: off


def test_the_operators_setting_wins(switch, monkeypatch):
    monkeypatch.setenv(memory.ENV_VAR, "1")
    assert memory.no_huge_page_advice() is False
    Node("site", {})
    assert switch(True) is True  # left as it was
