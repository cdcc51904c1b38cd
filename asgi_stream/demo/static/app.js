/* The demo page: stream a chat completion and show tokens as they arrive.
 * All URLs are relative, so the page works wherever the app is mounted. */
"use strict";

const $ = (id) => document.getElementById(id);
let controller = null;

function setStatus(text, isError) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

async function showModel() {
  try {
    const response = await fetch("v1/models");
    const body = await response.json();
    $("model").textContent = body.data[0].id;
  } catch (e) {
    $("model").textContent = "unknown";
  }
}

async function send(event) {
  event.preventDefault();
  if (controller) return;
  controller = new AbortController();
  $("send").disabled = true;
  $("stop").disabled = false;
  $("output").textContent = "";
  $("ttft").textContent = "–";
  $("tps").textContent = "–";
  $("tokens").textContent = "0";
  setStatus("waiting");

  const started = performance.now();
  let firstAt = null;
  let chunks = 0;
  let finished = false;
  const request = {
    model: "demo",
    messages: [{ role: "user", content: $("prompt").value }],
    stream: true,
    stream_options: { include_usage: true },
    max_tokens: parseInt($("max-tokens").value, 10),
    temperature: parseFloat($("temperature").value),
  };

  const onEvent = (ev) => {
    if (ev.data === "[DONE]") { finished = true; return; }
    let obj;
    try { obj = JSON.parse(ev.data); } catch (e) { return; }
    if (ev.type === "error" || obj.error) {
      setStatus("error: " + ((obj.error && obj.error.message) || "stream failed"), true);
      return;
    }
    if (obj.usage) $("tokens").textContent = String(obj.usage.completion_tokens);
    const choice = obj.choices && obj.choices[0];
    const text = choice && choice.delta && choice.delta.content;
    if (!text) return;
    const now = performance.now();
    if (firstAt === null) {
      firstAt = now;
      $("ttft").textContent = (now - started).toFixed(0) + " ms";
      setStatus("streaming");
    }
    chunks += 1;
    $("output").textContent += text;
    $("tokens").textContent = String(chunks);
    if (chunks > 1 && now > firstAt) {
      $("tps").textContent = ((chunks - 1) / ((now - firstAt) / 1000)).toFixed(1);
    }
  };

  try {
    const response = await fetch("v1/chat/completions", {
      method: "POST",
      headers: { "Content-Type": "application/json", "Accept": "text/event-stream" },
      body: JSON.stringify(request),
      signal: controller.signal,
    });
    if (!response.ok) {
      let message = response.status + " " + response.statusText;
      try { message = (await response.json()).error.message; } catch (e) { /* not JSON */ }
      setStatus("error: " + message, true);
      return;
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder("utf-8");
    const parser = new SSEParser(onEvent);
    for (;;) {
      const { done, value } = await reader.read();
      if (done) {
        parser.feed(decoder.decode());
        parser.end();
        break;
      }
      parser.feed(decoder.decode(value, { stream: true }));
    }
    if ($("status").className !== "error") setStatus(finished ? "done" : "ended early", !finished);
  } catch (e) {
    if (e.name === "AbortError") setStatus("stopped");
    else setStatus("error: " + e.message, true);
  } finally {
    controller = null;
    $("send").disabled = false;
    $("stop").disabled = true;
  }
}

function stop() {
  if (controller) controller.abort();
}

$("form").addEventListener("submit", send);
$("stop").addEventListener("click", stop);
showModel();
