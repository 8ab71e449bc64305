"""The in-process engine drives Flower's Message seam and reports silent nodes by name."""

from __future__ import annotations

import time
from typing import Any

import pytest

from healthfed.errors import TooFewSites
from healthfed.federation.federation import Federation
from healthfed.federation.grids.inprocess import InProcessGrid
from healthfed.federation.server_app import collect
from healthfed.node.runtime import Node


class EchoNode(Node):
    """A node whose handler echoes the request (transport test only, no data)."""

    def __init__(self, name: str, delay: float = 0.0) -> None:
        super().__init__(name=name, datasets={})
        self.delay = delay
        self.seen: list[dict[str, Any]] = []

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        self.seen.append(request)
        time.sleep(self.delay)
        return {"site": self.name, "status": "ok", "result": {"echo": request["params"]}}


def test_collect_reaches_every_node_through_flower_messages() -> None:
    nodes = [EchoNode("a"), EchoNode("b"), EchoNode("c")]
    grid = InProcessGrid(nodes)
    out = collect(
        grid, {"computation": "x", "params": {"k": 1}, "expected_sites": ["a", "b", "c"]}, 5
    )
    assert sorted(out["replies"]) == ["a", "b", "c"]
    assert out["missing"] == []
    assert all(n.seen and "expected_sites" not in n.seen[0] for n in nodes)
    assert out["replies"]["b"]["result"] == {"echo": {"k": 1}}
    grid.close()


def test_slow_node_is_reported_by_name_and_others_still_count() -> None:
    fed = Federation.inprocess([EchoNode("fast1"), EchoNode("slow", delay=2.0), EchoNode("fast2")])
    fed.timeout = 0.5
    outcome = fed.round("x", "covid", {"k": 2})
    assert outcome.contributed == ["fast1", "fast2"]
    assert outcome.missing == ["slow"]
    fed.close()


def test_refusals_are_kept_with_their_reason() -> None:
    class Refuser(EchoNode):
        def handle(self, request: dict[str, Any]) -> dict[str, Any]:
            return {"site": self.name, "status": "refused", "reason": "too few rows"}

    with Federation.inprocess([EchoNode("a"), EchoNode("b"), Refuser("r")]) as fed:
        outcome = fed.round("x", "covid")
        assert outcome.contributed == ["a", "b"]
        assert outcome.refused == {"r": "too few rows"}
        fed.min_sites = 3  # the one rule: too few sites is an error naming each refusal
        with pytest.raises(TooFewSites, match=r"too few rows \(refused by r\)") as err:
            fed.round("x", "covid")
    assert err.value.refusals == {"r": "too few rows"}


def test_a_deeply_nested_message_is_refused_not_crashed() -> None:
    """A hand-built message nested past Python's recursion limit is a FederationError."""
    from flwr.app import ConfigRecord, RecordDict

    from healthfed.errors import FederationError
    from healthfed.federation.messages import JSON_FIELD, REQUEST_RECORD, decode_request

    deep = "[" * 100_000 + "]" * 100_000
    content = RecordDict({REQUEST_RECORD: ConfigRecord({JSON_FIELD: deep})})
    with pytest.raises(FederationError, match="nested too deeply"):
        decode_request(content)
