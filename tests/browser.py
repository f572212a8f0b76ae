"""Open a page in headless Chromium and report what a person would see: console errors,
failed loads, images that did not decode, and a screenshot.

A small client of the Chrome DevTools Protocol over a websocket; no browser download, it
drives Debian's ``chromium`` (or another Chromium found on PATH).
"""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--remote-debugging-port=0", "--window-size=1200,900",
)


def find_chromium() -> str | None:
    """The path of a Chromium executable, or None."""
    return next(filter(None, map(shutil.which, BROWSERS)), None)


@dataclass
class PageVisit:
    """What happened while a page loaded."""

    errors: list[str] = field(default_factory=list)  # console errors, exceptions, failed loads
    facts: dict[str, Any] = field(default_factory=dict)  # the result of the probe script


class _DevTools:
    def __init__(self, socket: ClientConnection) -> None:
        self._socket = socket
        self._ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        message_id = next(self._ids)
        self._socket.send(json.dumps({"id": message_id, "method": method, "params": params}))
        while True:
            message = json.loads(self._socket.recv(timeout=60))
            if message.get("id") == message_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_for(self, event: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == event for e in self.events):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {event} within {timeout} s")
            self.events.append(json.loads(self._socket.recv(timeout=remaining)))


@contextmanager
def chromium(executable: str, profile: Path) -> Iterator[_DevTools]:
    """A headless Chromium with a fresh profile, and a DevTools session on its page."""
    process = subprocess.Popen([executable, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not port_file.exists() or not port_file.read_text().strip():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{executable} did not start (exit code {process.poll()})")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30) as response:
            page = next(t for t in json.load(response) if t["type"] == "page")
        with connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=30) as socket:
            yield _DevTools(socket)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _errors(events: list[dict[str, Any]]) -> list[str]:
    errors = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            errors.append("console: " + " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"]))
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            errors.append("exception: " + details.get("exception", {}).get("description", details.get("text", "")))
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            errors.append("log: " + params["entry"].get("text", ""))
        elif method == "Network.loadingFailed" and not params.get("canceled"):
            errors.append("load failed: " + params.get("errorText", ""))
    return errors


def visit(executable: str, url: str, probe: str, screenshot: Path, profile: Path) -> PageVisit:
    """Load ``url``, evaluate the JavaScript expression ``probe`` (its JSON-able value
    becomes ``facts``), save a full-page PNG screenshot and collect every error."""
    with chromium(executable, profile) as tools:
        for domain in ("Page", "Runtime", "Log", "Network"):
            tools.call(f"{domain}.enable")
        tools.call("Page.navigate", url=url)
        tools.wait_for("Page.loadEventFired")
        facts = tools.call("Runtime.evaluate", expression=probe, returnByValue=True, awaitPromise=True)
        shot = tools.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        screenshot.write_bytes(base64.b64decode(shot["data"]))
        # A canary proves that console errors are really being captured.
        tools.call("Runtime.evaluate", expression="console.error('fedshield-canary')")
        tools.call("Runtime.evaluate", expression="1")
        errors = _errors(tools.events)
    if "console: fedshield-canary" not in errors:
        raise RuntimeError("console errors are not being captured")
    errors.remove("console: fedshield-canary")
    return PageVisit(errors, facts.get("result", {}).get("value", {}))
