"""Headless Chromium driven over the DevTools protocol: console errors and a screenshot."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any


def chromium_binary() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def render_page(
    html_file: Path,
    screenshot: Path,
    width: int = 1280,
    height: int = 2000,
    timeout: float = 60.0,
    full_page: bool = False,
) -> dict[str, Any]:
    """Open ``html_file`` in headless Chromium; return console errors, exceptions and page facts.

    Chromium listens on a free loopback port (``--remote-debugging-port=0``); the
    page is loaded with network access to nothing but the file itself.
    """
    from websockets.sync.client import connect

    binary = chromium_binary()
    assert binary, "chromium is not installed"
    profile = tempfile.mkdtemp(prefix="hf-chromium-")
    args = [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--remote-debugging-address=127.0.0.1",
        "--remote-debugging-port=0",
        f"--window-size={width},{height}",
        "about:blank",
    ]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        ws_url = None
        deadline = time.monotonic() + timeout
        assert proc.stderr is not None
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                if proc.poll() is not None:
                    raise RuntimeError(f"chromium exited with {proc.returncode}")
                continue
            m = re.search(r"DevTools listening on (ws://\S+)", line)
            if m:
                ws_url = m.group(1)
                break
        assert ws_url, "chromium did not print its DevTools address"
        # The browser endpoint: open a page target and attach to it (flattened session).
        errors: list[str] = []
        with connect(ws_url, max_size=None, open_timeout=timeout) as ws:
            counter = {"id": 0}

            def send(method: str, params: dict | None = None, session: str | None = None) -> dict:
                counter["id"] += 1
                msg: dict[str, Any] = {
                    "id": counter["id"],
                    "method": method,
                    "params": params or {},
                }
                if session:
                    msg["sessionId"] = session
                ws.send(json.dumps(msg))
                while True:
                    reply = json.loads(ws.recv(timeout=timeout))
                    _collect(reply, errors)
                    if reply.get("id") == counter["id"]:
                        if "error" in reply:
                            raise RuntimeError(f"{method}: {reply['error']}")
                        return reply.get("result", {})

            target = send("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = send("Target.attachToTarget", {"targetId": target, "flatten": True})[
                "sessionId"
            ]
            for domain in ("Page", "Runtime", "Log"):
                send(f"{domain}.enable", session=session)
            send("Page.navigate", {"url": html_file.resolve().as_uri()}, session=session)
            # wait for the load event
            end = time.monotonic() + timeout
            loaded = False
            while time.monotonic() < end and not loaded:
                reply = json.loads(ws.recv(timeout=timeout))
                _collect(reply, errors)
                loaded = reply.get("method") == "Page.loadEventFired"
            assert loaded, "the page did not finish loading"
            facts = send(
                "Runtime.evaluate",
                {
                    "expression": "JSON.stringify({title: document.title, "
                    "marker: document.documentElement.getAttribute('data-report'), "
                    "images: document.images.length, "
                    "broken: Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).length, "
                    "height: document.documentElement.scrollHeight, "
                    "h2: Array.from(document.querySelectorAll('h2')).map(h => h.textContent), "
                    "resources: performance.getEntriesByType('resource').map(r => r.name)})",
                    "returnByValue": True,
                },
                session=session,
            )
            page = json.loads(facts["result"]["value"])
            clip_h = int(page["height"]) if full_page else height
            shot = send(
                "Page.captureScreenshot",
                {
                    "format": "png",
                    "captureBeyondViewport": full_page,
                    "clip": {"x": 0, "y": 0, "width": width, "height": clip_h, "scale": 1},
                },
                session=session,
            )
            screenshot.write_bytes(base64.b64decode(shot["data"]))
            time.sleep(0.2)
        page["errors"] = errors
        return page
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(profile, ignore_errors=True)


def _collect(msg: dict[str, Any], errors: list[str]) -> None:
    method = msg.get("method")
    params = msg.get("params", {})
    if method == "Runtime.exceptionThrown":
        errors.append("exception: " + json.dumps(params.get("exceptionDetails", {}))[:500])
    elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
        errors.append("console." + params["type"] + ": " + json.dumps(params.get("args", []))[:500])
    elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
        errors.append("log: " + params["entry"].get("text", "")[:500])
