"""Test-only stand-in ClientApp for the deployed-Flower tests: echoes the request.

It honours the same contract as ``healthfed.federation.client_app``: the node's
TOML path comes from ``context.node_config["healthfed-node"]``, the request is
the JSON in ConfigRecord ``request`` and the reply is JSON in ConfigRecord
``reply``. It touches no data. ``params["hold_s"]`` makes the sites named in
``params["hold_sites"]`` wait that long before answering (a node to kill mid-round).
"""

from __future__ import annotations

import json
import time
import tomllib
from pathlib import Path

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

app = ClientApp()


@app.query()
def query(msg: Message, context: Context) -> Message:
    path = Path(str(context.node_config["healthfed-node"]))
    site = tomllib.loads(path.read_text(encoding="utf-8"))["node"]["name"]
    request = json.loads(str(msg.content.config_records["request"]["json"]))
    params = request.get("params") or {}
    if site in params.get("hold_sites", []):
        time.sleep(float(params.get("hold_s", 0)))
    reply = {"site": site, "status": "ok", "result": {"echo": request.get("params")}}
    return Message(
        content=RecordDict({"reply": ConfigRecord({"json": json.dumps(reply)})}), reply_to=msg
    )
