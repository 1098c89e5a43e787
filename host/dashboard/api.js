// Talking to the gateway: the key kept for this browser tab, authenticated
// JSON calls, and the live event feed read with fetch() (EventSource cannot
// send an Authorization header).

const KEY_STORAGE = "freellm.dashboard.key";

/** The key of this tab's session, or null. */
export function storedKey() {
  try {
    return sessionStorage.getItem(KEY_STORAGE);
  } catch {
    return null;
  }
}

/** Remembers (or, with null, forgets) the key for this tab. */
export function storeKey(key) {
  try {
    if (key) sessionStorage.setItem(KEY_STORAGE, key);
    else sessionStorage.removeItem(KEY_STORAGE);
  } catch {
    // Storage disabled: the key lives only as long as the page.
  }
}

/** An error answer from the gateway (status, code and message). */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** Calls the gateway; resolves to parsed JSON, rejects with ApiError. */
export async function call(key, path, { method = "GET", body, raw } = {}) {
  const headers = {};
  if (key) headers.Authorization = `Bearer ${key}`;
  let payload;
  if (raw !== undefined) {
    payload = raw;
    headers["Content-Type"] = "application/wasm";
  } else if (body !== undefined) {
    payload = JSON.stringify(body);
    headers["Content-Type"] = "application/json";
  }
  let response;
  try {
    response = await fetch(path, { method, headers, body: payload, cache: "no-store" });
  } catch (e) {
    throw new ApiError(0, "network", `The gateway cannot be reached (${e.message}).`);
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    const error = data && data.error ? data.error : {};
    throw new ApiError(response.status, error.code || "http_" + response.status, error.message || `HTTP ${response.status}`);
  }
  return data;
}

/**
 * Follows `/v1/events` until stopped, reconnecting with backoff.
 * `onEvent(name, data)` gets each event; `onState(state)` gets
 * "connecting", "live" or "offline"; `onUnauthorized()` is called on a 401
 * (and the feed stops). Returns a function that stops the feed.
 */
export function follow(key, { onEvent, onState, onUnauthorized }) {
  let stopped = false;
  let controller = null;
  let backoff = 1000;

  const run = async () => {
    while (!stopped) {
      controller = new AbortController();
      onState("connecting");
      try {
        const headers = key ? { Authorization: `Bearer ${key}` } : {};
        const response = await fetch("/v1/events", { headers, signal: controller.signal, cache: "no-store" });
        if (response.status === 401) {
          stopped = true;
          onUnauthorized();
          return;
        }
        if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
        onState("live");
        backoff = 1000;
        await readEvents(response.body, onEvent);
      } catch {
        if (stopped) return;
      }
      if (stopped) return;
      onState("offline");
      await new Promise((resolve) => setTimeout(resolve, backoff));
      backoff = Math.min(backoff * 2, 15000);
    }
  };
  run();
  return () => {
    stopped = true;
    if (controller) controller.abort();
  };
}

/** Splits a text/event-stream body into events. */
async function readEvents(body, onEvent) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message";
      const data = [];
      for (const line of frame.split("\n")) {
        if (line.startsWith(":")) continue;
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length === 0) continue;
      let parsed;
      try {
        parsed = JSON.parse(data.join("\n"));
      } catch {
        continue;
      }
      onEvent(name, parsed);
    }
  }
}
