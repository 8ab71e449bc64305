"""How healthfed requests and replies travel inside Flower: every wire key, once.

One seam, as in Flower: a request is a JSON object in a ``ConfigRecord`` named
``request``; the node's reply is a JSON object in a ``ConfigRecord`` named
``reply``. JSON keeps the request inspectable by the data steward and makes it
impossible to smuggle code in it.

The other names both ends of a Flower run must agree on live here too: the
SuperNode's node config entry, the run config of a deployed ServerApp, the
SecAgg+ fit instructions and metrics, and the folder a session ServerApp reads
requests from. Nothing else in :mod:`healthfed.federation` spells them.
"""

from __future__ import annotations

import json
from typing import Any

from flwr.app import ConfigRecord, RecordDict

from healthfed.errors import FederationError

# --- Flower messages ---------------------------------------------------------------------
QUERY = "query"  # message type of a plain round (SecAgg+ rounds use Flower's "train")
REQUEST_RECORD = "request"  # ConfigRecord holding the request
REPLY_RECORD = "reply"  # ConfigRecord holding the node's reply
JSON_FIELD = "json"  # the one entry of those records: the JSON text

# --- node config (set by the hospital when it starts its SuperNode) ----------------------
NODE_CONFIG_KEY = "healthfed-node"  # path of the node TOML
SITE_CONFIG_KEY = "healthfed-site"  # the site name (in-process nodes)

# --- run config of the deployed ServerApp, and SecAgg+ fit instructions -----------------
REQUEST_KEY = "healthfed-request"  # the request as JSON (also in every SecAgg+ FitIns)
RESULT_KEY = "healthfed-result"  # file the one-shot ServerApp writes its result to
SESSION_KEY = "healthfed-session"  # folder a session ServerApp serves requests from

# --- SecAgg+ fit metrics, in the clear next to the masked vector ------------------------
SITE_METRIC = "site"
LAYOUT_METRIC = "layout"

# --- the request envelope ----------------------------------------------------------------
# Fields the aggregator uses itself and never forwards to the nodes.
AGGREGATOR_FIELDS = ("expected_sites", "timeout", "node_timeout")
TIMEOUT_FIELD = "timeout"
# Seconds the aggregator still waits for the other nodes once the first has answered
# (a node killed mid-round is dropped after this, not after the round timeout).
NODE_TIMEOUT_FIELD = "node_timeout"
SECURE_FIELD = "secure"  # set: the round is SecAgg+
DEFAULT_ROUND_TIMEOUT_S = 120.0  # a request without its own timeout

# --- a session ServerApp's folder (requests in, results out, "close" to finish) ---------
SESSION_REQUESTS = "requests"
SESSION_RESULTS = "results"
SESSION_CLOSE = "close"
SESSION_SERVING = "serving"  # written by the ServerApp once it reads requests
SESSION_ERROR = "session_error"  # result key: the ServerApp failed on this request

# --- collected replies ---------------------------------------------------------------------
SECURE_LABEL = "(secure aggregate)"  # the one reply of a SecAgg+ round: the sum over sites


def encode(kind: str, payload: dict[str, Any]) -> RecordDict:
    """``payload`` as JSON in a ``ConfigRecord`` named ``kind``."""
    return RecordDict({kind: ConfigRecord({JSON_FIELD: json.dumps(payload, allow_nan=False)})})


def decode(kind: str, content: RecordDict) -> dict[str, Any]:
    """The JSON object in the ``ConfigRecord`` named ``kind``; ``FederationError`` if malformed."""
    try:
        record = content.config_records[kind]
        value = record[JSON_FIELD]
    except KeyError:
        raise FederationError(f"message has no {kind!r} record") from None
    if not isinstance(value, str):
        raise FederationError(f"{kind!r} record must hold a JSON string")
    try:
        payload = json.loads(value)
    except json.JSONDecodeError as exc:
        raise FederationError(f"{kind!r} record is not valid JSON: {exc}") from None
    except RecursionError:  # a hand-built, absurdly nested message: refuse, keep serving
        raise FederationError(f"{kind!r} record is nested too deeply to read") from None
    if not isinstance(payload, dict):
        raise FederationError(f"{kind!r} record must be a JSON object")
    return payload


def encode_request(request: dict[str, Any]) -> RecordDict:
    return encode(REQUEST_RECORD, request)


def decode_request(content: RecordDict) -> dict[str, Any]:
    return decode(REQUEST_RECORD, content)


def encode_reply(reply: dict[str, Any]) -> RecordDict:
    return encode(REPLY_RECORD, reply)


def decode_reply(content: RecordDict) -> dict[str, Any]:
    return decode(REPLY_RECORD, content)


def node_envelope(request: dict[str, Any], *drop: str) -> dict[str, Any]:
    """What the nodes receive of ``request``: all but :data:`AGGREGATOR_FIELDS` and ``drop``."""
    skip = {*AGGREGATOR_FIELDS, *drop}
    return {k: v for k, v in request.items() if k not in skip}
