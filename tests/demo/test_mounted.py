"""``app.mount("/demo", create_app())`` inside someone's FastAPI app: Starlette does not
run a mounted app's lifespan, so the model must load on first use — once."""

from __future__ import annotations

import threading
from typing import Any

import httpx
import openai
from fastapi import FastAPI

from asgi_stream.demo import create_app
from asgi_stream.demo.model import LoadedModel

from .conftest import chunk_texts


def test_mounted_in_fastapi(tiny: LoadedModel, server: Any) -> None:
    loads: list[str] = []
    lock = threading.Lock()

    def loader() -> LoadedModel:
        with lock:
            loads.append(threading.current_thread().name)
        return tiny

    demo = create_app(loader)
    outer = FastAPI()

    @outer.get("/")
    def home() -> dict[str, str]:
        return {"app": "outer"}

    outer.mount("/demo", demo)
    running = server(outer, lifespan="on")  # the outer lifespan runs, the demo's does not
    base = running.url
    try:
        assert loads == []  # nothing loaded at start-up
        assert httpx.get(base + "/").json() == {"app": "outer"}

        page = httpx.get(base + "/demo", follow_redirects=True, timeout=10)
        assert page.status_code == 200 and str(page.url).endswith("/demo/")
        assert 'src="static/app.js"' in page.text  # relative: resolves under the prefix
        script = httpx.get(base + "/demo/static/app.js", timeout=10)
        assert script.status_code == 200 and 'fetch("v1/chat/completions"' in script.text
        assert 'fetch("/' not in script.text  # no absolute URL would escape the mount

        # Concurrent first requests: the model loads exactly once.
        results: list[int] = []

        def hit() -> None:
            r = httpx.post(base + "/demo/generate", json={"prompt": "hi", "max_tokens": 5}, timeout=30)
            results.append(r.status_code)

        threads = [threading.Thread(target=hit) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert results == [200] * 4
        assert len(loads) == 1

        client = openai.OpenAI(base_url=base + "/demo/v1", api_key="x", max_retries=0)
        chunks = list(
            client.chat.completions.create(
                model="tiny", messages=[{"role": "user", "content": "hi"}], stream=True, max_tokens=10, temperature=0
            )
        )
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        raw = httpx.post(
            base + "/demo/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "hi"}], "stream": True, "max_tokens": 10, "temperature": 0},
            timeout=30,
        )
        assert raw.headers["content-type"].startswith("text/event-stream")
        assert chunk_texts(raw.text)
        assert httpx.get(base + "/demo/metrics").status_code == 200
        assert len(loads) == 1
    finally:
        demo.state.service.engine.close()
