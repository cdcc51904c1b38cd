"""Real WHATWG EventSource clients resuming on their own through nginx and two
workers: the server drops every connection after a few events; the client
reconnects with ``Last-Event-ID`` (landing on the other worker), and ends with the
complete text exactly once — then stops by itself on the 204 that answers its
reconnect after the last event.

Clients: the npm ``eventsource`` package on the machine's Node.js (installed by the
test into ``build/resume-node/``, ignored by git; skipped without node/npm or the
registry), and Debian's chromium driven by Playwright.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from .app import token
from .procs import ROOT

N, CUT, RETRY_MS = 29, 4, 150  # 31 events: 7 connections cut, the 8th ends cleanly
EVENTSOURCE_VERSION = "3.0.7"  # the last major that supports Node.js 18 and 20
NODE_DIR = ROOT / "build" / "resume-node"
CLIENT_JS = Path(__file__).with_name("eventsource_client.mjs")
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]  # fmt: skip


def _node_eventsource() -> Path:
    """The directory holding node_modules/eventsource (installed on first use)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("Node.js and npm are needed for the npm eventsource client (apt-get install nodejs npm)")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=False).stdout.strip()
    if int(re.match(r"v(\d+)", version).group(1)) < 18:
        pytest.skip(f"the eventsource package needs Node.js >= 18, found {version}")
    installed = NODE_DIR / "node_modules" / "eventsource" / "package.json"
    if installed.exists() and json.loads(installed.read_text())["version"] == EVENTSOURCE_VERSION:
        return NODE_DIR
    NODE_DIR.mkdir(parents=True, exist_ok=True)
    try:
        proc = subprocess.run(
            [npm, "install", "--prefix", str(NODE_DIR), "--no-audit", "--no-fund", "--no-save",
             f"eventsource@{EVENTSOURCE_VERSION}"],
            capture_output=True, text=True, timeout=240, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.skip("npm install eventsource timed out (no registry?)")
    if proc.returncode != 0 or not installed.exists():
        pytest.skip(f"npm install eventsource failed: {proc.stderr[-500:]}")
    return NODE_DIR


def run_node(url: str, timeout_s: float) -> dict:
    node_dir = _node_eventsource()
    proc = subprocess.run(
        ["node", str(CLIENT_JS), str(node_dir), url, str(int(timeout_s * 1000))],
        capture_output=True, text=True, timeout=timeout_s + 20, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


PAGE_SCRIPT = """
([url, timeoutMs]) => new Promise((resolve) => {
  const messages = [], errors = [];
  let opens = 0;
  const started = Date.now();
  const es = new EventSource(url);
  const finish = (reason) => {
    es.close();
    resolve({reason, opens, errors, messages, elapsedMs: Date.now() - started});
  };
  es.onopen = () => { opens += 1; };
  es.onmessage = (e) => messages.push({data: e.data, lastEventId: e.lastEventId});
  es.onerror = () => {
    errors.push({readyState: es.readyState});
    if (es.readyState === EventSource.CLOSED) finish("closed");
  };
  setTimeout(() => finish("timeout"), timeoutMs);
})
"""


def run_chromium(origin: str, path: str, timeout_s: float) -> dict:
    if not os.path.exists(CHROMIUM):
        pytest.skip("chromium is not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(origin + "/health")
            return page.evaluate(PAGE_SCRIPT, [path, int(timeout_s * 1000)])
        finally:
            browser.close()


@pytest.mark.parametrize("client", ["node-eventsource", "chromium"])
def test_eventsource_reconnects_by_itself_and_gets_everything_once(cluster, redis_server, client) -> None:
    c = cluster(redis_server.url)
    tag = f"es-{client}"
    path = f"/chat?n={N}&interval=0.03&retry={RETRY_MS}&cut={CUT}&tag={tag}"
    if client == "node-eventsource":
        result = run_node(f"http://127.0.0.1:{c.port}{path}", 40)
    else:
        result = run_chromium(f"http://127.0.0.1:{c.port}", path, 40)

    assert result["reason"] == "closed", (result, c.diagnostics())
    datas = [m["data"] for m in result["messages"]]
    assert datas == ["start"] + [token(i) for i in range(N)] + ["[DONE]"]
    ids = [m["lastEventId"] for m in result["messages"]]
    stream_ids = {i.rsplit(".", 1)[0] for i in ids}
    assert len(stream_ids) == 1 and [int(i.rsplit(".", 1)[1]) for i in ids] == list(range(1, N + 3))
    # It really was cut and reconnected, on both workers, and stopped on the 204.
    cuts = [e for e in c.events() if e["kind"] == "cut"]
    # (An event in flight when a connection drops is sent again on the next one, so a
    # client may see more connections than 31 / 4.)
    assert len(cuts) >= (N + 2) // CUT and {e["worker"] for e in cuts} == {"A", "B"}
    assert result["opens"] in (len(cuts), len(cuts) + 1)
    if client == "node-eventsource":
        assert result["errors"][-1]["code"] == 204
    # One generator, run once to its end.
    gens = [e for e in c.events() if e["kind"].startswith("generator") and e.get("tag") == tag]
    assert [e["kind"] for e in gens] == ["generator-start", "generator-end"]
    assert gens[1]["produced"] == N and not gens[1]["cancelled"]
