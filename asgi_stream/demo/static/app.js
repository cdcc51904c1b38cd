/* The demo page: stream a chat completion and show the seams while it streams —
 * the text, every read() of the body as it arrived (where SSE events end inside it,
 * and where a read ended inside a UTF-8 character), a live plot of inter-token gaps
 * and tokens/s, TTFT, and after Stop the server's measured cancel-to-stop.
 * All URLs are relative, so the page works wherever the app is mounted. */
"use strict";

const $ = (id) => document.getElementById(id);
const MAX_ROWS = 300;  // raw-read rows kept in the DOM (the counters count them all)
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

/* ------------------------------------------------------------------ UTF-8 */

/** How many bytes at the end of `bytes` begin a character that is not complete in it. */
function danglingBytes(bytes) {
  const n = bytes.length;
  for (let back = 1; back <= Math.min(4, n); back++) {
    const b = bytes[n - back];
    if ((b & 0xc0) === 0x80) continue;  // a continuation byte: the lead is further back
    const need = b >= 0xf0 ? 4 : b >= 0xe0 ? 3 : b >= 0xc0 ? 2 : 1;
    return need > back ? back : 0;
  }
  return 0;
}

/** How many continuation bytes open `bytes` (the rest of a character begun before it). */
function leadingContinuations(bytes) {
  let i = 0;
  while (i < bytes.length && i < 3 && (bytes[i] & 0xc0) === 0x80) i++;
  return i;
}

const hex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join(" ");

/* ------------------------------------------------------------------ raw reads */

class ReadLog {
  constructor(list) {
    this.list = list;
    this.count = 0;
    this.splits = 0;
    this.held = 0;          // bytes the decoder carried over from the previous read
    this.endedWithLF = false;
  }

  reset() {
    this.list.textContent = "";
    this.count = this.splits = this.held = 0;
    this.endedWithLF = false;
    $("chunk-count").textContent = "0";
    $("split-count").textContent = "0";
  }

  /** One read: its bytes, the text the streaming decoder produced for it, the SSE
   *  events it completed, whether it ended inside an event, and when (ms). */
  add(bytes, text, events, midEvent, t) {
    const li = document.createElement("li");
    li.className = "chunk";
    li.dataset.bytes = String(bytes.length);
    li.dataset.events = String(events);
    li.dataset.t = t.toFixed(1);
    const meta = document.createElement("span");
    meta.className = "meta";
    meta.textContent = `+${t.toFixed(0)} ms · ${bytes.length} B · ${events} event${events === 1 ? "" : "s"}` +
      (midEvent ? " · ends mid-event" : "");
    li.appendChild(meta);
    const body = document.createElement("span");
    body.className = "text";
    let rest = text;
    if (this.held) {  // this read opens with the rest of a character begun in the last one
      const cont = leadingContinuations(bytes);
      const joined = Array.from(rest)[0] || "";
      const mark = document.createElement("mark");
      mark.className = "joined-char";
      mark.title = `${hex(bytes.subarray(0, cont))} completed the ${this.held} byte(s) held back from the ` +
        `previous read: the decoder emitted "${joined}" only now`;
      mark.textContent = joined;
      body.appendChild(mark);
      rest = rest.slice(joined.length);
      li.classList.add("continues");
    }
    this.appendWithBoundaries(body, rest);
    const dangling = danglingBytes(bytes);
    if (dangling) {  // the read ended inside a character: the decoder holds its first bytes
      li.classList.add("split");
      li.dataset.held = String(dangling);
      const mark = document.createElement("mark");
      mark.className = "split-char";
      mark.textContent = `⟨${hex(bytes.subarray(bytes.length - dangling))}⟩`;
      mark.title = `this read ended ${dangling} byte(s) into a multi-byte character; a streaming ` +
        "TextDecoder holds them until the next read (decoded alone, this read would end in U+FFFD)";
      body.appendChild(mark);
      const naive = document.createElement("span");
      naive.className = "naive";
      naive.textContent = " decoded alone: …" + new TextDecoder().decode(bytes).slice(-6);
      body.appendChild(naive);
      this.splits += 1;
      $("split-count").textContent = String(this.splits);
    }
    this.held = dangling;
    li.appendChild(body);
    this.list.appendChild(li);
    while (this.list.childElementCount > MAX_ROWS) this.list.firstElementChild.remove();
    this.count += 1;
    $("chunk-count").textContent = String(this.count);
  }

  /** The text with "¶" where an SSE event ends (a blank line; LF line ends, as this server sends). */
  appendWithBoundaries(body, text) {
    if (this.endedWithLF && text.startsWith("\n")) {
      body.appendChild(boundary());
      text = text.slice(1);
    }
    if (text) this.endedWithLF = text.endsWith("\n") && !text.endsWith("\n\n");
    const parts = text.split("\n\n");
    parts.forEach((part, i) => {
      if (i > 0) body.appendChild(boundary());
      if (part) body.appendChild(document.createTextNode(part.replace(/\n/g, "↵\n")));
    });
  }
}

function boundary() {
  const span = document.createElement("span");
  span.className = "event-end";
  span.title = "an SSE event ends here (blank line)";
  span.textContent = "¶\n";
  return span;
}

/* ------------------------------------------------------------------ the plot */

class GapPlot {
  constructor(svg) {
    this.svg = svg;
    this.times = [];
    this.pending = false;
  }

  reset() {
    this.times = [];
    this.draw();
  }

  /** A content event arrived at `t` ms. */
  add(t) {
    this.times.push(t);
    if (!this.pending) {
      this.pending = true;
      requestAnimationFrame(() => { this.pending = false; this.draw(); });
    }
  }

  /** Draw now (also at the end of a stream, so the DOM is final). */
  draw() {
    const t = this.times;
    const gaps = [], rates = [];
    for (let i = 1; i < t.length; i++) {
      gaps.push(t[i] - t[i - 1]);
      rates.push(t[i] > t[0] ? i / ((t[i] - t[0]) / 1000) : 0);
    }
    const W = 600, H = 170, n = Math.max(gaps.length - 1, 1);
    const gapMax = Math.max(1, ...gaps) * 1.1, rateMax = Math.max(1, ...rates) * 1.1;
    const line = (ys, max) => ys.map((y, i) => `${((i / n) * W).toFixed(1)},${(H - (y / max) * (H - 16)).toFixed(1)}`).join(" ");
    $("gap-line").setAttribute("points", line(gaps, gapMax));
    $("rate-line").setAttribute("points", line(rates, rateMax));
    $("gap-max").textContent = gaps.length ? `${Math.max(...gaps).toFixed(0)} ms max gap` : "";
    $("rate-max").textContent = rates.length ? `${rates[rates.length - 1].toFixed(1)} tok/s` : "";
    this.svg.dataset.points = String(gaps.length);
  }
}

/* ------------------------------------------------------------------ server stats */

/** This request's /stats entry once its compute is over (null if it never shows up). */
async function serverEntry(id, timeoutMs = 10000) {
  const until = performance.now() + timeoutMs;
  while (performance.now() < until) {
    try {
      const response = await fetch("stats/" + id);
      if (response.ok) {
        const entry = await response.json();
        if (entry.generation_done && entry.outcome !== null) return entry;
      }
    } catch (e) { /* retry */ }
    await new Promise((r) => setTimeout(r, 100));
  }
  return null;
}

async function showServerStats(id, cancelled) {
  const entry = await serverEntry(id);
  if (!entry) return;
  if (entry.ttft_s !== null && entry.ttft_s !== undefined) $("server-ttft").textContent = (entry.ttft_s * 1000).toFixed(0) + " ms";
  if (entry.tokens_per_s) $("server-tps").textContent = entry.tokens_per_s.toFixed(1);
  if (cancelled && entry.cancel_to_stop_ms !== null && entry.cancel_to_stop_ms !== undefined) {
    const steps = entry.steps_after_cancel;
    $("cancel-to-stop").textContent = entry.cancel_to_stop_ms.toFixed(1) + " ms" +
      (steps !== null && steps !== undefined ? ` (${steps} step${steps === 1 ? "" : "s"} after)` : "");
    $("cancel-to-stop").dataset.ms = String(entry.cancel_to_stop_ms);
  }
}

/* ------------------------------------------------------------------ streaming */

const reads = new ReadLog($("chunks"));
const plot = new GapPlot($("plot"));

async function send(event) {
  event.preventDefault();
  if (controller) return;
  controller = new AbortController();
  $("send").disabled = true;
  $("stop").disabled = false;
  $("output").textContent = "";
  for (const id of ["ttft", "tps", "cancel-to-stop", "request-id", "server-ttft", "server-tps", "finish"]) $(id).textContent = "–";
  delete $("cancel-to-stop").dataset.ms;
  $("tokens").textContent = "0";
  $("event-count").textContent = "0";
  reads.reset();
  plot.reset();
  setStatus("waiting");

  const started = performance.now();
  let firstAt = null;
  let contentEvents = 0;
  let events = 0;
  let finished = false;
  let requestId = null;
  const request = {
    model: "demo",
    messages: [{ role: "user", content: $("prompt").value }],
    stream: true,
    stream_options: { include_usage: true },
    max_tokens: parseInt($("max-tokens").value, 10),
    temperature: parseFloat($("temperature").value),
  };
  if ($("stop-seq").value) request.stop = $("stop-seq").value;
  const headers = { "Content-Type": "application/json", "Accept": "text/event-stream" };
  if ($("split").checked) headers["X-Split-Sends"] = "1";

  const onEvent = (ev) => {
    events += 1;
    if (ev.data === "[DONE]") { finished = true; return; }
    let obj;
    try { obj = JSON.parse(ev.data); } catch (e) { return; }
    if (ev.type === "error" || obj.error) {
      setStatus("error: " + ((obj.error && obj.error.message) || "stream failed"), true);
      return;
    }
    if (obj.usage) $("tokens").textContent = String(obj.usage.completion_tokens);
    const choice = obj.choices && obj.choices[0];
    if (choice && choice.finish_reason) $("finish").textContent = choice.finish_reason;
    const text = choice && choice.delta && choice.delta.content;
    if (!text) return;
    const now = performance.now();
    if (firstAt === null) {
      firstAt = now;
      $("ttft").textContent = (now - started).toFixed(0) + " ms";
      setStatus("streaming");
    }
    contentEvents += 1;
    plot.add(now - started);
    $("output").textContent += text;
    $("tokens").textContent = String(contentEvents);
    if (contentEvents > 1 && now > firstAt) {
      $("tps").textContent = ((contentEvents - 1) / ((now - firstAt) / 1000)).toFixed(1);
    }
  };

  try {
    const response = await fetch("v1/chat/completions", {
      method: "POST",
      headers,
      body: JSON.stringify(request),
      signal: controller.signal,
    });
    requestId = response.headers.get("X-Request-Id");
    if (requestId) $("request-id").textContent = requestId;
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
      const before = events;
      const text = decoder.decode(value, { stream: true });
      parser.feed(text);
      $("event-count").textContent = String(events);
      reads.add(value, text, events - before, parser.pending(), performance.now() - started);
    }
    plot.draw();
    if ($("status").className !== "error") setStatus(finished ? "done" : "ended early", !finished);
    if (requestId) showServerStats(requestId, false);
  } catch (e) {
    plot.draw();
    if (e.name === "AbortError") {
      setStatus("stopped");
      $("cancel-to-stop").textContent = "measuring…";
      if (requestId) showServerStats(requestId, true);
    } else setStatus("error: " + e.message, true);
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
