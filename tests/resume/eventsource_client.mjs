// A WHATWG EventSource client (the npm `eventsource` package) for the resume tests.
//
//   node eventsource_client.mjs <dir with node_modules> <url> <timeout ms>
//
// Connects, lets the EventSource reconnect on its own (it sends Last-Event-ID),
// and prints one JSON object when the EventSource has closed itself (a 204 or any
// other failure) or the timeout passed: every message with its lastEventId, the
// number of opens, and the errors seen.
import { createRequire } from "node:module";
import { join } from "node:path";

const [dir, url, timeoutMs] = process.argv.slice(2);
const { EventSource } = createRequire(join(dir, "package.json"))("eventsource");

const messages = [];
const errors = [];
let opens = 0;
const started = Date.now();
const es = new EventSource(url);

function finish(reason) {
  es.close();
  process.stdout.write(
    JSON.stringify({ reason, opens, errors, messages, elapsedMs: Date.now() - started }) + "\n",
  );
  process.exit(0);
}

es.addEventListener("open", () => {
  opens += 1;
  process.stderr.write(`open ${opens}\n`); // progress, for tests that act on it
});
es.addEventListener("message", (event) => {
  messages.push({ data: event.data, lastEventId: event.lastEventId });
});
es.addEventListener("error", (event) => {
  errors.push({ message: String(event.message ?? ""), code: event.code ?? null, readyState: es.readyState });
  if (es.readyState === EventSource.CLOSED) {
    finish("closed");
  }
});
setTimeout(() => finish("timeout"), Number(timeoutMs));
