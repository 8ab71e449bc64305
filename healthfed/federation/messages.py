"""How healthfed requests and replies travel inside Flower messages.

One seam, as in Flower: a request is a JSON object in a ``ConfigRecord`` named
``request``; the node's reply is a JSON object in a ``ConfigRecord`` named
``reply``. JSON keeps the request inspectable by the data steward and makes it
impossible to smuggle code in it.
"""

from __future__ import annotations

import json
from typing import Any

from flwr.app import ConfigRecord, RecordDict

from healthfed.errors import FederationError

QUERY = "query"


def encode(kind: str, payload: dict[str, Any]) -> RecordDict:
    return RecordDict({kind: ConfigRecord({"json": json.dumps(payload, allow_nan=False)})})


def decode(kind: str, content: RecordDict) -> dict[str, Any]:
    try:
        record = content.config_records[kind]
        value = record["json"]
    except KeyError:
        raise FederationError(f"message has no {kind!r} record") from None
    if not isinstance(value, str):
        raise FederationError(f"{kind!r} record must hold a JSON string")
    try:
        payload = json.loads(value)
    except json.JSONDecodeError as exc:
        raise FederationError(f"{kind!r} record is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise FederationError(f"{kind!r} record must be a JSON object")
    return payload


def encode_request(request: dict[str, Any]) -> RecordDict:
    return encode("request", request)


def decode_request(content: RecordDict) -> dict[str, Any]:
    return decode("request", content)


def encode_reply(reply: dict[str, Any]) -> RecordDict:
    return encode("reply", reply)


def decode_reply(content: RecordDict) -> dict[str, Any]:
    return decode("reply", content)
