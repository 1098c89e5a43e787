// Browser tests of the dashboard: a real gateway (target/debug/freellm) with
// the real groq and ollama components, two small mock upstreams speaking
// OpenAI chat completions, and Debian's Chromium driven by playwright-core.
//
//   npm ci && npm test            (from tests/browser; scripts/browser-tests.sh does it all)
//
// Environment: FREELLM_BIN (default: <repo>/target/debug/freellm),
// CHROMIUM (default: /usr/bin/chromium). Screenshots go to ./artifacts/.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { once } from "node:events";
import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { chromium } from "playwright-core";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, "../..");
const BIN = process.env.FREELLM_BIN || path.join(ROOT, "target/debug/freellm");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const WASM = path.join(ROOT, "target/wasm32-wasip2/wasm");
const ARTIFACTS = path.join(HERE, "artifacts");

const ADMIN = "admin-key-browser-test-0123456789abcdef";
const MASTER = "master-key-browser-test-0123456789abcdef";
const VIRTUAL = "sk-freellm-browser-team";
const GROQ_MODEL = "groq/llama-3.3-70b-versatile";

// This machine's network is closed: without these Chromium stalls on
// start-up trying to reach its services.
const CHROMIUM_FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

let work;
let groq;
let ollama;
let gateway;
let context;
let page;
const problems = [];

// ---------------------------------------------------------------- helpers

/**
 * The port in the gateway's `FreeLLM gateway listening address=...` log
 * line, once it is there (colour codes may surround the field's name).
 */
function listeningPort(log) {
  const line = log.split("\n").find((l) => l.includes("FreeLLM gateway listening"));
  const match = line && /127\.0\.0\.1:(\d+)/.exec(line);
  return match ? Number(match[1]) : null;
}

/** An OpenAI-compatible mock: `mode` "ok" answers, "fail" answers 503. */
async function startMock(name) {
  const mock = { name, mode: "ok", requests: 0 };
  mock.server = http.createServer((req, res) => {
    let body = "";
    req.on("data", (c) => (body += c));
    req.on("end", () => {
      mock.requests += 1;
      if (req.method !== "POST" || !req.url.endsWith("/chat/completions")) {
        res.writeHead(404, { "content-type": "application/json" });
        res.end(JSON.stringify({ error: { message: "not found" } }));
        return;
      }
      if (mock.mode === "fail") {
        res.writeHead(503, { "content-type": "application/json" });
        res.end(JSON.stringify({ error: { message: `${name} is over capacity`, type: "server_error" } }));
        return;
      }
      let model = "m";
      try {
        model = JSON.parse(body).model || model;
      } catch {
        // keep the default
      }
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({
        id: "chatcmpl-browser",
        object: "chat.completion",
        created: 1700000000,
        model,
        choices: [{ index: 0, message: { role: "assistant", content: `Hello from ${name}` }, finish_reason: "stop" }],
        usage: { prompt_tokens: 7, completion_tokens: 4, total_tokens: 11 },
      }));
    });
  });
  mock.server.listen(0, "127.0.0.1");
  await once(mock.server, "listening");
  mock.url = `http://127.0.0.1:${mock.server.address().port}`;
  return mock;
}

/** Appends a custom section: the same adapter, another hash. */
function withCustomSection(bytes, note) {
  const name = Buffer.from("freellm-test");
  const payload = Buffer.from(note);
  const leb = (n) => {
    const out = [];
    do {
      let b = n & 0x7f;
      n >>>= 7;
      if (n) b |= 0x80;
      out.push(b);
    } while (n);
    return Buffer.from(out);
  };
  const content = Buffer.concat([leb(name.length), name, payload]);
  return Buffer.concat([bytes, Buffer.from([0]), leb(content.length), content]);
}

function sha256(bytes) {
  return createHash("sha256").update(bytes).digest("hex");
}

async function startGateway() {
  const groqWasm = path.join(work, "groq.wasm");
  fs.copyFileSync(path.join(WASM, "freellm_provider_groq.wasm"), groqWasm);
  const config = [
    "[providers.groq]",
    `component = ${JSON.stringify(groqWasm)}`,
    "limits = { rpm = 0, rpd = 0, tpm = 0, tpd = 0 }",
    "",
    "[providers.ollama]",
    `component = ${JSON.stringify(path.join(WASM, "freellm_provider_ollama.wasm"))}`,
    'settings_env = { models = "OLLAMA_MODELS" }',
    "",
  ].join("\n");
  fs.writeFileSync(path.join(work, "plugins.toml"), config);
  fs.writeFileSync(path.join(work, "keys.json"), JSON.stringify({
    keys: [{ id: VIRTUAL, label: "Browser team", dailyRequestCap: 50, dailyTokenCap: 5000 }],
  }));
  const env = {
    PATH: process.env.PATH,
    HOME: process.env.HOME || work,
    // A port the system picks: no other process can take it between a
    // choice and the bind. The address is read from the listening line.
    PORT: "0",
    HOST: "127.0.0.1",
    FREELLM_DATA_DIR: path.join(work, "data"),
    FREELLM_CACHE_DIR: path.join(ROOT, "target/browser-component-cache"),
    FREELLM_ADMIN_KEY: ADMIN,
    FREELLM_API_KEY: MASTER,
    FREELLM_VIRTUAL_KEYS_PATH: path.join(work, "keys.json"),
    GROQ_API_KEY: "k1",
    GROQ_BASE_URL: `${groq.url}/v1`,
    OLLAMA_BASE_URL: ollama.url,
    OLLAMA_MODELS: "llama3",
    CB_FAILURE_THRESHOLD: "1",
    ROUTE_TRANSIENT_RETRIES: "0",
    LOG_LEVEL: "warn,freellm::http::server=info",
  };
  const child = spawn(BIN, ["serve", "--config", path.join(work, "plugins.toml")], {
    env,
    stdio: ["ignore", "ignore", "pipe"],
  });
  const gw = { child, url: null, log: "", groqWasm };
  child.stderr.on("data", (c) => (gw.log += c));
  const deadline = Date.now() + 90_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`the gateway exited during start-up:\n${gw.log}`);
    const port = gw.url ? null : listeningPort(gw.log);
    if (port) gw.url = `http://127.0.0.1:${port}`;
    if (gw.url) {
      try {
        const r = await fetch(`${gw.url}/healthz`);
        if (r.ok) break;
      } catch {
        // not answering yet
      }
    }
    if (Date.now() > deadline) throw new Error(`the gateway did not become healthy:\n${gw.log}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return gw;
}

async function chat(content, { key = ADMIN, model = GROQ_MODEL } = {}) {
  const r = await fetch(`${gateway.url}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${key}` },
    body: JSON.stringify({ model, messages: [{ role: "user", content }] }),
  });
  await r.text();
  return r;
}

async function api(pathname, key = ADMIN) {
  const r = await fetch(`${gateway.url}${pathname}`, { headers: { authorization: `Bearer ${key}` } });
  return r.json();
}

/** Polls `check` (which returns truthy when done) for up to `ms`. */
async function until(what, check, ms = 10_000) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      last = await check();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (last: ${last})`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function text(selector) {
  return (await page.locator(selector).first().textContent()) || "";
}

async function shot(name) {
  await page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`), fullPage: true });
}

async function tab(name) {
  await page.click(`#tabs a[data-tab="${name}"]`);
  await page.locator(`#view-${name}`).waitFor({ state: "visible" });
}

function watch(p) {
  p.on("console", (msg) => {
    if (msg.type() === "error") problems.push(`console error: ${msg.text()}`);
  });
  p.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
}

// ---------------------------------------------------------------- set-up

before(async () => {
  for (const f of [BIN, CHROMIUM, path.join(WASM, "freellm_provider_groq.wasm")]) {
    assert.ok(fs.existsSync(f), `missing ${f} (scripts/browser-tests.sh builds and installs what is needed)`);
  }
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  work = fs.mkdtempSync(path.join(os.tmpdir(), "freellm-browser-"));
  groq = await startMock("groq");
  ollama = await startMock("ollama");
  gateway = await startGateway();
  context = await chromium.launchPersistentContext(path.join(work, "chromium-profile"), {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_FLAGS,
    viewport: { width: 1280, height: 900 },
  });
  page = context.pages()[0] || (await context.newPage());
  watch(page);
});

after(async () => {
  if (context) await context.close().catch(() => {});
  if (gateway) {
    gateway.child.kill("SIGTERM");
    const exited = once(gateway.child, "exit");
    const timeout = new Promise((r) => setTimeout(r, 5000));
    if ((await Promise.race([exited.then(() => "exited"), timeout])) !== "exited") gateway.child.kill("SIGKILL");
  }
  for (const m of [groq, ollama]) if (m) m.server.close();
  if (work) fs.rmSync(work, { recursive: true, force: true });
});

// ---------------------------------------------------------------- the flow

test("the dashboard asks for a key and signs in with the admin key", async () => {
  await page.goto(`${gateway.url}/dashboard`);
  await page.locator("#signin").waitFor({ state: "visible" });
  await shot("01-signin");
  await page.fill("#key", ADMIN);
  await page.click("#signin-form button[type=submit]");
  await page.locator("#view-overview").waitFor({ state: "visible" });
  assert.equal((await text("#role")).trim(), "admin");
  await until("the live feed", async () => (await text("#live")).includes("live"));
  await page.evaluate(() => {
    window.__sameDocument = true;
  });
  await shot("02-overview-empty");
});

test("the providers view lists the configured providers", async () => {
  await tab("providers");
  await page.locator('[data-provider="groq"]').waitFor();
  await page.locator('[data-provider="ollama"]').waitFor();
  assert.equal(await page.locator('[data-provider="groq"] [data-breaker]').getAttribute("data-breaker"), "closed");
  assert.match(await text('[data-provider="groq"] .badges'), /TRAINS|NO-TRAIN|CONFIG|LOCAL/);
  await shot("03-providers");
});

test("traffic shows up in the live log and counters without a reload", async () => {
  await tab("requests");
  assert.equal(await page.locator("#log tbody tr").count(), 0);
  for (const content of ["one", "two", "three", "one"]) assert.equal((await chat(content)).status, 200);
  assert.equal((await chat("via ollama", { model: "ollama/llama3" })).status, 200);
  assert.equal((await chat("team request", { key: VIRTUAL })).status, 200);
  await until("six rows in the live log", async () => (await page.locator("#log tbody tr").count()) === 6);
  assert.equal(await page.locator("#log tbody tr .badge:text('CACHE')").count(), 1);
  // Filter by provider.
  await page.selectOption("#filter-provider", "ollama");
  await until("the provider filter", async () => (await page.locator("#log tbody tr").count()) === 1);
  await page.selectOption("#filter-provider", "");
  // A row's details: route attempts and headers.
  await page.locator("#log tbody tr").last().click();
  await until("the request detail", async () => (await text("#detail")).includes("Route attempts"));
  assert.match(await text("#attempts"), /groq/);
  assert.match(await text("#detail"), /X-FreeLLM-Route-Reason/);
  await shot("04-requests");

  await tab("overview");
  await until("the request counter", async () => (await text('[data-metric="total"] .value')).trim() === "6");
  await until("the cache hit rate", async () => /%/.test(await text('[data-metric="cache"] .value')));
  await until("tokens", async () => (await text('[data-metric="tokens"] .value')).trim() !== "0");
  assert.match(await text('[data-metric="latency"] .value'), /ms/);
  assert.ok(await page.locator("#chart-requests svg rect").count() > 0, "the requests chart has bars");
  assert.ok(await page.evaluate(() => window.__sameDocument === true), "the page was not reloaded");
  await shot("05-overview-traffic");
});

test("a tripped breaker shows up live and the reset button closes it", async () => {
  await tab("providers");
  groq.mode = "fail";
  // Nothing else serves the model: every candidate failed, so 429 all_providers_exhausted.
  assert.equal((await chat("this fails")).status, 429);
  groq.mode = "ok";
  await until("the open breaker", async () =>
    (await page.locator('[data-provider="groq"] [data-breaker]').getAttribute("data-breaker")) === "open");
  await until("the last error", async () => (await text('[data-provider="groq"]')).includes("over capacity"));
  await shot("06-breaker-open");
  await page.click('button[data-reset="groq"]');
  await until("the closed breaker", async () =>
    (await page.locator('[data-provider="groq"] [data-breaker]').getAttribute("data-breaker")) === "closed");
  const status = await api("/v1/status");
  assert.equal(status.providers.find((p) => p.id === "groq").circuitBreakerState, "closed");
  await shot("07-breaker-reset");
});

test("the routing strategy switch changes the gateway's strategy", async () => {
  await tab("overview");
  assert.equal(await page.getAttribute('[data-strategy="quota_aware"]', "aria-pressed"), "true");
  await page.click('[data-strategy="round_robin"]');
  await until("the pressed button", async () =>
    (await page.getAttribute('[data-strategy="round_robin"]', "aria-pressed")) === "true");
  assert.equal((await api("/v1/status")).routingStrategy, "round_robin");
  await page.click('[data-strategy="quota_aware"]');
  await until("quota-aware again", async () => (await api("/v1/status")).routingStrategy === "quota_aware");
});

test("an adapter reload from the UI shows rejections and swaps", async () => {
  await tab("adapters");
  const card = '[data-adapter="groq"]';
  await page.locator(card).waitFor();
  const original = fs.readFileSync(gateway.groqWasm);
  assert.equal(await page.getAttribute(`${card} [data-field="hash"]`, "title"), sha256(original));
  await shot("08-adapters");

  // A broken component is refused; the old version keeps serving.
  fs.writeFileSync(gateway.groqWasm, Buffer.from("this is not a component"));
  await page.click("#reload-all");
  await until("the refusal", async () => (await page.locator(`${card} [data-field="last-error"]`).count()) === 1, 15_000);
  assert.equal((await chat("still served")).status, 200);
  await shot("09-adapter-rejected");

  // The same adapter with a different hash is swapped in.
  const next = withCustomSection(original, `build ${Date.now()}`);
  fs.writeFileSync(gateway.groqWasm, next);
  await page.click("#reload-all");
  await until("the new hash", async () =>
    (await page.getAttribute(`${card} [data-field="hash"]`, "title")) === sha256(next), 15_000);
  await until("the refusal cleared", async () => (await page.locator(`${card} [data-field="last-error"]`).count()) === 0);
  assert.equal((await chat("served by the new version")).status, 200);
  await shot("10-adapter-swapped");
});

test("virtual keys and browser tokens are shown", async () => {
  await tab("keys");
  await page.locator(`[data-vkey]`).first().waitFor();
  assert.match(await text("[data-vkey]"), /Browser team/);
  assert.match(await text("[data-vkey]"), /Requests \(24 h\): 1 \/ 50/);
  assert.equal(await page.getAttribute("[data-browser-tokens]", "data-browser-tokens"), "disabled");
  await shot("11-keys");
});

test("the layout fits a phone-width screen", async () => {
  await page.setViewportSize({ width: 390, height: 844 });
  for (const view of ["overview", "providers", "requests", "adapters"]) {
    await tab(view);
    await page.waitForTimeout(100);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 1, `${view} overflows the phone width by ${overflow}px`);
    await shot(`12-phone-${view}`);
  }
  await page.setViewportSize({ width: 1280, height: 900 });
});

test("the master key gets a read-only dashboard", async () => {
  const readonly = await context.newPage();
  watch(readonly);
  await readonly.goto(`${gateway.url}/dashboard#providers`);
  await readonly.fill("#key", MASTER);
  await readonly.click("#signin-form button[type=submit]");
  await readonly.locator("#view-providers").waitFor({ state: "visible" });
  assert.match((await readonly.locator("#role").textContent()) || "", /read-only/);
  assert.ok(await readonly.locator('button[data-reset="groq"]').isDisabled());
  await readonly.click('#tabs a[data-tab="keys"]');
  await readonly.locator('[data-notice="vkeys"]').waitFor();
  await readonly.screenshot({ path: path.join(ARTIFACTS, "13-read-only.png"), fullPage: true });
  await readonly.close();
});

test("nothing in the browser console errored", () => {
  assert.deepEqual(problems, []);
});
