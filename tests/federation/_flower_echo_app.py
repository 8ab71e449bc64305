"""Test-only stand-in ClientApp for the deployed-Flower tests: echoes the request.

It honours the same contract as ``healthfed.federation.client_app``: the node's
TOML path comes from ``context.node_config["healthfed-node"]``, the request is
the JSON in ConfigRecord ``request`` and the reply is JSON in ConfigRecord
``reply``. It touches no data. ``params["hold_s"]`` makes the sites named in
``params["hold_sites"]`` wait that long before answering (a node to kill mid-round);
``params["pad_mb"]`` adds that many MB to the replies of ``params["pad_sites"]`` (a
reply whose objects take a while to upload, to kill a node between its reply message
and the reply's objects).
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
    records = {"reply": ConfigRecord({"json": json.dumps(reply)})}
    if site in params.get("pad_sites", []):
        records["pad"] = ConfigRecord({"bytes": b"\0" * int(float(params["pad_mb"]) * 2**20)})
    return Message(content=RecordDict(records), reply_to=msg)
