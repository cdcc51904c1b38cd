/* An incremental Server-Sent Events parser, following the WHATWG HTML standard,
 * "9.2.6 Interpreting an event stream". Feed it decoded text in pieces of any size
 * (use a TextDecoder with {stream: true}, which also strips a leading BOM): lines end
 * at CRLF, LF or CR — a CR at the end of one piece and an LF at the start of the next
 * are one line end — and events are dispatched only at a blank line. A final event not
 * followed by a blank line is discarded, as the standard requires. */
"use strict";

class SSEParser {
  /** @param {(event: {type: string, data: string, lastEventId: string}) => void} onEvent */
  constructor(onEvent) {
    this.onEvent = onEvent;
    this.onRetry = null;
    this.buffer = "";        // text after the last complete line
    this.skipLF = false;     // the previous piece ended with CR: drop one leading LF
    this.data = "";          // the data buffer
    this.type = "";          // the event type buffer
    this.idBuffer = "";      // the last event ID buffer
    this.lastEventId = "";
  }

  /** Process the next piece of decoded text. */
  feed(text) {
    if (!text) return;
    if (this.skipLF) {
      this.skipLF = false;
      if (text[0] === "\n") text = text.slice(1);
    }
    const buf = this.buffer + text;
    let pos = 0;
    for (;;) {
      let cr = buf.indexOf("\r", pos);
      let lf = buf.indexOf("\n", pos);
      if (cr < 0 && lf < 0) break;
      let end, next;
      if (cr >= 0 && (lf < 0 || cr < lf)) {
        end = cr;
        if (cr + 1 < buf.length) {
          next = buf[cr + 1] === "\n" ? cr + 2 : cr + 1;
        } else {
          next = cr + 1;
          this.skipLF = true;  // CRLF may be split across pieces
        }
      } else {
        end = lf;
        next = lf + 1;
      }
      this.line(buf.slice(pos, end));
      pos = next;
    }
    this.buffer = buf.slice(pos);
  }

  /** Whether an event has begun but not ended (its blank line not yet seen). */
  pending() {
    return this.buffer !== "" || this.data !== "" || this.type !== "";
  }

  /** The stream ended: an incomplete event is discarded. */
  end() {
    this.buffer = "";
    this.data = "";
    this.type = "";
  }

  line(line) {
    if (line === "") return this.dispatch();
    if (line[0] === ":") return;  // a comment (keepalive)
    const colon = line.indexOf(":");
    let field, value;
    if (colon >= 0) {
      field = line.slice(0, colon);
      value = line.slice(colon + 1);
      if (value[0] === " ") value = value.slice(1);
    } else {
      field = line;
      value = "";
    }
    if (field === "event") this.type = value;
    else if (field === "data") this.data += value + "\n";
    else if (field === "id") { if (value.indexOf("\0") < 0) this.idBuffer = value; }
    else if (field === "retry") { if (/^[0-9]+$/.test(value) && this.onRetry) this.onRetry(parseInt(value, 10)); }
  }

  dispatch() {
    this.lastEventId = this.idBuffer;
    if (this.data === "") {
      this.type = "";
      return;
    }
    let data = this.data;
    if (data[data.length - 1] === "\n") data = data.slice(0, -1);
    const event = { type: this.type || "message", data, lastEventId: this.lastEventId };
    this.data = "";
    this.type = "";
    this.onEvent(event);
  }
}

if (typeof window !== "undefined") window.SSEParser = SSEParser;
