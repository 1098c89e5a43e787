// The FreeLLM dashboard: sign-in, the live feed, and five views (overview,
// providers, adapters, requests, keys). Plain DOM, no framework, no build.
//
// Data flow: one /v1/status on start, then the /v1/events feed (a snapshot,
// then every finished request and state change). Counters move with each
// request event; after a burst of events one /v1/status refresh (at most
// every 1.5 s, only while events arrive) brings the slower-moving figures
// (key windows, token totals) up to date. Nothing polls on a timer: the
// one-second ticker only redraws countdowns and slides the charts.

import { call, follow, storedKey, storeKey } from "./api.js";
import { latencyChart, quantile, requestsChart } from "./charts.js";

const LOG_MAX = 500;
const ROWS_SHOWN = 200;
const BUCKET_MS = 10_000;
const BUCKETS = 30;
const REFRESH_MS = 1500;
const VIEWS = ["overview", "providers", "adapters", "requests", "keys"];

const state = {
  key: null,
  access: { role: "open", admin: true },
  status: null,
  log: [],
  seen: new Set(),
  series: new Map(),
  counters: { total: 0, success: 0, failed: 0 },
  usage: { promptTokens: 0, completionTokens: 0, totalTokens: 0 },
  plugins: null,
  pluginsError: null,
  vkeys: null,
  vkeysError: null,
  filter: { provider: "", status: "" },
  selected: null,
  view: "overview",
  live: "connecting",
  stopFeed: null,
  refreshTimer: null,
  ticker: null,
  colours: new Map(),
  dirty: new Set(),
  frame: 0,
  lastBucket: 0,
};

// ---------------------------------------------------------------- helpers

const $ = (selector) => document.querySelector(selector);

/** Builds an element: h("div", {class: "x", onclick: fn, "data-id": 1}, child, "text"). */
function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") node.addEventListener(k.slice(2), v);
    else if (k === "class") node.className = v;
    else if (v === true) node.setAttribute(k, "");
    else node.setAttribute(k, String(v));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function compact(n) {
  if (n == null) return "–";
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)}B`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)}K`;
  return String(n);
}

function plural(n, one, many = `${one}s`) {
  return `${compact(n)} ${n === 1 ? one : many}`;
}

function pct(part, whole) {
  return whole > 0 ? `${Math.round((100 * part) / whole)}%` : "–";
}

function clock(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return "";
  const p = (n, w = 2) => String(n).padStart(w, "0");
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}

function ago(iso) {
  if (!iso) return "never";
  const s = Math.round((Date.now() - new Date(iso).getTime()) / 1000);
  if (!Number.isFinite(s)) return "";
  if (s < 5) return "just now";
  if (s < 90) return `${s} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  if (s < 129600) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

function duration(ms) {
  const s = Math.ceil(ms / 1000);
  if (s < 90) return `${s} s`;
  if (s < 5400) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

function bar(used, cap) {
  const ratio = cap ? Math.min(1, used / cap) : 0;
  const fill = h("span");
  fill.style.width = `${(ratio * 100).toFixed(1)}%`;
  return h("div", { class: `bar${ratio >= 0.9 ? " high" : ratio >= 0.7 ? " mid" : ""}`, role: "meter",
    "aria-valuemin": 0, "aria-valuemax": cap || 0, "aria-valuenow": used }, fill);
}

function colour(id) {
  if (!state.colours.has(id)) state.colours.set(id, `c${state.colours.size % 8}`);
  return state.colours.get(id);
}

function toast(text, kind = "info") {
  const node = h("div", { class: `toast ${kind}`, role: "status" }, text);
  $("#toasts").append(node);
  setTimeout(() => node.remove(), 5000);
  while ($("#toasts").children.length > 4) $("#toasts").firstElementChild.remove();
}

function markDirty(...views) {
  for (const v of views) state.dirty.add(v);
  if (!state.frame) state.frame = requestAnimationFrame(render);
}

// ---------------------------------------------------------------- session

async function boot() {
  bindStatic();
  let session;
  try {
    session = await call(null, "/dashboard/session");
  } catch (e) {
    showSignin(e.message);
    return;
  }
  if (!session.protected) {
    await start(null);
    return;
  }
  const key = storedKey();
  if (key) await start(key);
  else showSignin("");
}

function showSignin(message) {
  stop();
  for (const v of VIEWS) $(`#view-${v}`).hidden = true;
  $("#tabs").hidden = true;
  $("#signout").hidden = true;
  $("#role").hidden = true;
  setLive("offline");
  $("#signin").hidden = false;
  const error = $("#signin-error");
  error.textContent = message || "";
  error.hidden = !message;
  $("#key").focus();
}

async function start(key) {
  let status;
  try {
    status = await call(key, "/v1/status");
  } catch (e) {
    storeKey(null);
    showSignin(e.status === 401 ? "That key was refused." : e.message);
    return;
  }
  state.key = key;
  storeKey(key);
  state.access = status.access || { role: "open", admin: true };
  applyStatus(status);
  $("#signin").hidden = true;
  $("#tabs").hidden = false;
  $("#signout").hidden = key === null;
  const role = $("#role");
  role.hidden = false;
  role.textContent =
    state.access.role === "open" ? "open gateway" : state.access.admin ? "admin" : `read-only (${state.access.role})`;
  role.title = state.access.admin ? "Admin controls enabled" : "Admin controls need the admin key";
  showView(viewFromHash());
  state.stopFeed = follow(key, {
    onEvent,
    onState: setLive,
    onUnauthorized: () => signOut("The gateway no longer accepts this key."),
  });
  state.ticker = setInterval(tick, 1000);
  if (state.access.admin) {
    loadPlugins();
    loadVirtualKeys();
  }
}

function stop() {
  if (state.stopFeed) state.stopFeed();
  state.stopFeed = null;
  clearInterval(state.ticker);
  clearTimeout(state.refreshTimer);
  state.refreshTimer = null;
}

function signOut(message) {
  storeKey(null);
  state.key = null;
  state.status = null;
  state.log = [];
  state.seen = new Set();
  state.series = new Map();
  state.plugins = null;
  state.vkeys = null;
  showSignin(message || "");
}

function setLive(live) {
  state.live = live;
  const pill = $("#live");
  pill.className = `pill ${live}`;
  pill.querySelector(".text").textContent = live;
}

// ---------------------------------------------------------------- data

function applyStatus(status) {
  const now = Date.now();
  for (const p of status.providers || []) {
    const remaining = p.circuitBreaker && p.circuitBreaker.opened_for_ms_remaining;
    p.openUntil = remaining != null ? now + remaining : null;
    for (const k of p.keys || []) k.until = k.retryAfterMs != null ? now + k.retryAfterMs : null;
  }
  state.status = status;
  state.counters = { total: status.totalRequests, success: status.successRequests, failed: status.failedRequests };
  state.usage = { ...status.usage };
  // Oldest first, so the log ends newest first.
  const before = state.log.length;
  for (const entry of [...(status.recentRequests || [])].reverse()) addRequest(entry, false);
  // Entries the feed missed (a lag, a reconnect) go where their time says.
  if (state.log.length !== before) state.log.sort((a, b) => (a.timestamp < b.timestamp ? 1 : a.timestamp > b.timestamp ? -1 : 0));
  updateProviderFilter();
  markDirty(...VIEWS);
}

function addRequest(entry, live) {
  if (!entry || !entry.id || state.seen.has(entry.id)) return;
  state.seen.add(entry.id);
  state.log.unshift(entry);
  if (state.log.length > LOG_MAX) state.seen.delete(state.log.pop().id);
  if (live) {
    state.counters.total += 1;
    if (entry.status === "success") state.counters.success += 1;
    else state.counters.failed += 1;
    if (!entry.cached) {
      const prompt = entry.promptTokens || 0;
      const completion = entry.completionTokens || 0;
      state.usage.promptTokens += prompt;
      state.usage.completionTokens += completion;
      state.usage.totalTokens += prompt + completion;
    }
  }
  const t = Date.parse(entry.timestamp);
  if (Number.isFinite(t)) {
    const index = Math.floor(t / BUCKET_MS);
    let bucket = state.series.get(index);
    if (!bucket) state.series.set(index, (bucket = { providers: {}, latencies: [] }));
    const provider = entry.provider || (entry.attempted && entry.attempted[entry.attempted.length - 1]) || "none";
    const slot = bucket.providers[provider] || (bucket.providers[provider] = { ok: 0, err: 0 });
    if (entry.status === "success") slot.ok += 1;
    else slot.err += 1;
    bucket.latencies.push(entry.latencyMs);
  }
}

function provider(id) {
  return state.status && (state.status.providers || []).find((p) => p.id === id);
}

function onEvent(name, data) {
  switch (name) {
    case "snapshot":
      applyStatus(data);
      break;
    case "request":
      addRequest(data, true);
      updateProviderFilter();
      markDirty("overview", "requests");
      scheduleRefresh();
      break;
    case "breaker": {
      const p = provider(data.provider);
      if (p) {
        p.circuitBreakerState = data.state;
        if (p.circuitBreaker) p.circuitBreaker.state = data.state;
        if (data.state !== "open") p.openUntil = null;
        // Breakers are per model: the event names the model that moved.
        p.modelBreakers = p.modelBreakers || {};
        if (data.model) p.modelBreakers[data.model] = { ...(p.modelBreakers[data.model] || {}), state: data.model_state };
        else for (const m of Object.values(p.modelBreakers)) m.state = data.state;
      }
      const shown = data.model ? data.model_state : data.state;
      const text = { open: "breaker opened", half_open: "breaker half-open", closed: "breaker closed" }[shown];
      const who = data.model ? `${data.provider}/${data.model}` : data.provider;
      toast(`${who}: ${text || shown}`, shown === "open" ? "bad" : shown === "closed" ? "ok" : "warn");
      markDirty("providers");
      scheduleRefresh();
      break;
    }
    case "key_cooldown": {
      const p = provider(data.provider);
      const k = p && (p.keys || []).find((x) => x.index === data.key);
      if (k) {
        k.rateLimited = true;
        k.retryAfterMs = data.retry_after_ms;
        k.until = Date.now() + data.retry_after_ms;
      }
      toast(`${data.provider}: key #${data.key} cooling down for ${duration(data.retry_after_ms)}`, "warn");
      markDirty("providers");
      break;
    }
    case "adapter":
      toast(
        `adapter ${data.id}: ${data.state}${data.version ? ` (version ${data.version})` : ""}${data.error ? ` — ${data.error}` : ""}`,
        data.error ? "bad" : "ok",
      );
      loadPlugins();
      scheduleRefresh();
      break;
    case "cache":
      if (state.status) state.status.cache = data;
      markDirty("overview");
      break;
    case "routing":
      if (state.status) state.status.routingStrategy = data.strategy;
      markDirty("overview");
      break;
    case "lagged":
      scheduleRefresh(0);
      break;
    default:
      break;
  }
}

/** One /v1/status refresh shortly after events (never more than one pending). */
function scheduleRefresh(delay = REFRESH_MS) {
  if (state.refreshTimer) return;
  state.refreshTimer = setTimeout(async () => {
    state.refreshTimer = null;
    try {
      applyStatus(await call(state.key, "/v1/status"));
      if (state.access.admin) {
        if (state.view === "keys") loadVirtualKeys();
        if (state.view === "adapters") loadPlugins();
      }
    } catch (e) {
      if (e.status === 401) signOut("The gateway no longer accepts this key.");
    }
  }, delay);
}

async function loadPlugins() {
  if (!state.access.admin) return;
  try {
    state.plugins = await call(state.key, "/v1/plugins");
    state.pluginsError = null;
  } catch (e) {
    state.pluginsError = e.status === 403 ? "Adapter management needs the admin key." : e.message;
  }
  markDirty("adapters");
}

async function loadVirtualKeys() {
  if (!state.access.admin) return;
  try {
    state.vkeys = await call(state.key, "/v1/status/virtual-keys");
    state.vkeysError = null;
  } catch (e) {
    state.vkeys = null;
    state.vkeysError = e.status === 403 ? "Listing virtual keys needs the admin key." : e.message;
  }
  markDirty("keys");
}

function tick() {
  const bucket = Math.floor(Date.now() / BUCKET_MS);
  if (bucket !== state.lastBucket) {
    state.lastBucket = bucket;
    for (const index of state.series.keys()) if (index <= bucket - BUCKETS) state.series.delete(index);
    markDirty("overview");
  }
  // Countdowns (only while one runs, so the cards are not redrawn for nothing).
  if (state.view === "providers" && state.status) {
    const now = Date.now() - 1000;
    const counting = (state.status.providers || []).some(
      (p) => (p.openUntil && p.openUntil > now) || (p.keys || []).some((k) => k.until && k.until > now));
    if (counting) markDirty("providers");
  }
}

// ---------------------------------------------------------------- actions

async function setStrategy(strategy) {
  if (!state.access.admin) return;
  try {
    const result = await call(state.key, "/v1/status/routing", { method: "PATCH", body: { strategy } });
    if (state.status) state.status.routingStrategy = result.routingStrategy || strategy;
    toast(`Routing strategy: ${strategy.replace("_", " ")}`, "ok");
  } catch (e) {
    toast(`Cannot switch routing: ${e.message}`, "bad");
  }
  markDirty("overview");
}

async function resetProvider(id) {
  try {
    await call(state.key, `/v1/status/providers/${encodeURIComponent(id)}/reset`, { method: "POST" });
    toast(`${id}: breaker closed and key cooldowns cleared`, "ok");
  } catch (e) {
    toast(`Cannot reset ${id}: ${e.message}`, "bad");
  }
  scheduleRefresh(0);
}

function describeOutcomes(result) {
  const outcomes = (result && result.outcomes) || [];
  if (!outcomes.length) return "nothing to reload";
  return outcomes
    .map((o) => `${o.id}: ${o.action}${o.rejection ? ` (${o.rejection.step}: ${o.rejection.error})` : ""}${o.note ? ` (${o.note})` : ""}`)
    .join("; ");
}

async function reloadAdapters(id) {
  const button = id ? null : $("#reload-all");
  if (button) button.disabled = true;
  try {
    const result = await call(state.key, "/v1/plugins/reload", { method: "POST", body: id ? { id } : {} });
    const rejected = ((result && result.outcomes) || []).some((o) => o.rejection);
    toast(`Reload: ${describeOutcomes(result)}`, rejected ? "bad" : "ok");
  } catch (e) {
    toast(`Reload failed: ${e.message}`, "bad");
  }
  if (button) button.disabled = !state.access.admin;
  await loadPlugins();
  scheduleRefresh(0);
}

async function reloadFromFile(id) {
  try {
    const result = await call(state.key, `/v1/plugins/${encodeURIComponent(id)}/reload?source=file`, { method: "POST", body: {} });
    const rejected = ((result && result.outcomes) || []).some((o) => o.rejection);
    toast(`Back to the file: ${describeOutcomes(result)}`, rejected ? "bad" : "ok");
  } catch (e) {
    toast(`Reload of ${id} from its file failed: ${e.message}`, "bad");
  }
  await loadPlugins();
  scheduleRefresh(0);
}

async function uploadAdapter(id, file) {
  try {
    const bytes = await file.arrayBuffer();
    const result = await call(state.key, `/v1/plugins/${encodeURIComponent(id)}`, { method: "POST", raw: bytes });
    toast(`Upload: ${describeOutcomes(result)}`, "ok");
  } catch (e) {
    toast(`Upload to ${id} failed: ${e.message}`, "bad");
  }
  await loadPlugins();
}

// ---------------------------------------------------------------- views

function viewFromHash() {
  const name = location.hash.replace(/^#/, "");
  return VIEWS.includes(name) ? name : "overview";
}

function showView(view) {
  state.view = view;
  for (const v of VIEWS) $(`#view-${v}`).hidden = v !== view;
  for (const a of document.querySelectorAll("#tabs a")) {
    if (a.dataset.tab === view) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  if (view === "adapters" && state.access.admin) loadPlugins();
  if (view === "keys" && state.access.admin) loadVirtualKeys();
  markDirty(view);
}

function render() {
  state.frame = 0;
  if (!state.status) return;
  const dirty = state.dirty;
  state.dirty = new Set();
  if (dirty.has(state.view)) {
    const renderers = { overview: renderOverview, providers: renderProviders, adapters: renderAdapters, requests: renderRequests, keys: renderKeys };
    renderers[state.view]();
  }
  // Views not shown stay dirty until they are.
  for (const v of dirty) if (v !== state.view) state.dirty.add(v);
}

function metric(id, label, value, sub) {
  return h("div", { class: "panel metric", "data-metric": id },
    h("div", { class: "label" }, label),
    h("div", { class: "value" }, value),
    h("div", { class: "sub" }, sub || "\u00a0"));
}

/** Where shared state lives and which instance answered; a fleet whose
 * Redis is unreachable says "degraded: shared state unavailable". */
function sharedStateMetric(shared) {
  const st = shared || { backend: "local", instanceId: "" };
  const value = st.degraded ? "degraded" : st.backend === "redis" ? "shared (Redis)" : "local";
  const sub = st.degraded ? `${st.message} · instance ${st.instanceId}` : `instance ${st.instanceId}`;
  const node = metric("shared-state", "Shared state", value, sub);
  if (st.degraded) node.classList.add("warn");
  return node;
}

function recentLatencies() {
  const since = Date.now() - BUCKETS * BUCKET_MS;
  return state.log.filter((e) => Date.parse(e.timestamp) >= since).map((e) => e.latencyMs);
}

function renderOverview() {
  const s = state.status;
  for (const b of document.querySelectorAll("#strategy button")) {
    b.setAttribute("aria-pressed", String(b.dataset.strategy === s.routingStrategy));
    b.disabled = !state.access.admin;
    if (!state.access.admin) b.title = "Switching needs the admin key";
  }
  const c = state.counters;
  const cache = s.cache || {};
  const lookups = (cache.hits || 0) + (cache.misses || 0);
  const latencies = recentLatencies();
  const p50 = quantile(latencies, 0.5);
  const p99 = quantile(latencies, 0.99);
  const taken = (s.providers || []).reduce((sum, p) => sum + (p.rateLimitedRequests || 0), 0);
  $("#metrics").replaceChildren(
    metric("total", "Requests", compact(c.total), `${compact(c.success)} ok · ${compact(c.failed)} failed`),
    metric("success", "Success rate", pct(c.success, c.total), c.total ? plural(c.failed, "error") : "no requests yet"),
    metric("cache", "Cache hit rate", cache.enabled === false ? "off" : pct(cache.hits || 0, lookups),
      cache.enabled === false ? "CACHE_ENABLED=false" : `${plural(cache.hits || 0, "hit")} · ${plural(cache.misses || 0, "miss", "misses")}`),
    metric("tokens", "Tokens (24 h)", compact(state.usage.totalTokens),
      `in ${compact(state.usage.promptTokens)} · out ${compact(state.usage.completionTokens)}`),
    metric("latency", "Latency p50 / p99", p50 == null ? "–" : `${p50} / ${p99} ms`,
      latencies.length ? `${latencies.length} requests, last 5 min` : "no requests in 5 min"),
    metric("avoided", "Upstream 429s avoided", compact(s.quotaSkips || 0),
      `routed around full quotas · ${plural(taken, "429")} taken`),
    sharedStateMetric(s.sharedState),
  );
  renderCharts();
}

function chartBuckets() {
  const last = Math.floor(Date.now() / BUCKET_MS);
  const out = [];
  for (let i = last - BUCKETS + 1; i <= last; i++) {
    const b = state.series.get(i);
    out.push({
      t: i * BUCKET_MS,
      providers: b ? b.providers : {},
      p50: b ? quantile(b.latencies, 0.5) : null,
      p99: b ? quantile(b.latencies, 0.99) : null,
    });
  }
  return out;
}

function renderCharts() {
  const buckets = chartBuckets();
  requestsChart($("#chart-requests"), buckets, colour);
  latencyChart($("#chart-latency"), buckets);
  const ids = new Set();
  for (const b of buckets) for (const id of Object.keys(b.providers)) ids.add(id);
  $("#legend-requests").replaceChildren(
    ...[...ids].sort().map((id) => h("span", {}, h("i", { class: colour(id) }), id)),
    h("span", {}, h("i", { class: "err" }), "errors"),
  );
}

const BREAKER = {
  closed: ["Healthy", "ok"],
  half_open: ["Testing", "warn"],
  open: ["Failing", "bad"],
};

const PRIVACY = {
  "no-training": ["NO-TRAIN", "ok"],
  local: ["LOCAL", "info"],
  configurable: ["CONFIG", "warn"],
  "free-tier-trains": ["TRAINS", "bad"],
};

function breakerBadge(p) {
  if (!p.enabled) return h("span", { class: "badge muted", "data-breaker": "disabled" }, "Disabled");
  let st = p.circuitBreakerState;
  // An open breaker whose timeout passed lets the next request probe.
  if (st === "open" && p.openUntil && p.openUntil <= Date.now()) st = "half_open";
  const [text, kind] = BREAKER[st] || [st, "muted"];
  return h("span", { class: `badge ${kind}`, "data-breaker": st, title: `circuit breaker ${st.replace("_", "-")}` }, text);
}

// The models whose breaker is not closed (the provider's badge shows the worst).
function modelBreakers(p) {
  const sick = Object.entries(p.modelBreakers || {}).filter(([, b]) => b && b.state && b.state !== "closed");
  if (!sick.length) return null;
  return h("div", { class: "small", "data-model-breakers": p.id }, h("span", { class: "muted" }, "Models: "),
    ...sick.map(([model, b]) => {
      const [text, kind] = BREAKER[b.state] || [b.state, "muted"];
      return h("span", { class: `badge ${kind}`, "data-model-breaker": model, title: `${model}: circuit breaker ${b.state.replace("_", "-")}` }, `${model} ${text}`);
    }));
}

function privacyBadge(privacy) {
  if (!privacy) return null;
  const [text, kind] = PRIVACY[privacy.policy] || [privacy.policy, "muted"];
  const title = `${privacy.policy}${privacy.lastVerified ? ` · verified ${privacy.lastVerified}` : ""}${privacy.note ? ` · ${privacy.note}` : ""}`;
  return privacy.sourceUrl
    ? h("a", { class: `badge ${kind}`, href: privacy.sourceUrl, target: "_blank", rel: "noopener noreferrer", title }, text)
    : h("span", { class: `badge ${kind}`, title }, text);
}

function keyRow(p, k) {
  const limits = p.limits || {};
  const w = k.windows || {};
  const rpm = limits.requestsPerMinute;
  const left = k.until ? k.until - Date.now() : 0;
  let right;
  if (k.invalid) right = h("span", { class: "badge bad", title: k.invalidReason || "" }, "invalid");
  else if (left > 0) right = h("span", { class: "badge warn", "data-cooldown": k.index }, `cooling ${duration(left)}`);
  else right = h("span", { class: "badge ok" }, "ready");
  const n = w.requestsMinute || 0;
  const use = rpm ? `${n}/${rpm} requests this minute` : `${plural(n, "request")} this minute (no limit declared)`;
  const day = limits.requestsPerDay ? ` · ${w.requestsDay || 0}/${limits.requestsPerDay} today` : "";
  const tpm = limits.tokensPerMinute ? ` · ${compact(w.tokensMinute || 0)}/${compact(limits.tokensPerMinute)} tokens/min` : "";
  return h("div", { class: "key-row", "data-key": k.index },
    h("span", { class: "mono" }, `key #${k.index}`),
    h("div", {}, rpm ? bar(w.requestsMinute || 0, rpm) : null, h("div", { class: "muted small" }, use + day + tpm)),
    right);
}

function renderProviders() {
  const all = (state.status.providers || []).slice().sort((a, b) => Number(b.enabled) - Number(a.enabled));
  const enabled = all.filter((p) => p.enabled).length;
  $("#providers-summary").textContent = `${enabled} enabled of ${all.length}`;
  $("#providers").replaceChildren(...all.map((p) => {
    const usage = p.usage || {};
    const left = p.openUntil ? p.openUntil - Date.now() : 0;
    const admin = state.access.admin;
    const notClosed = p.circuitBreakerState !== "closed";
    return h("article", { class: `panel${p.enabled ? "" : " disabled-card"}`, "data-provider": p.id },
      h("div", { class: "card-head" },
        h("div", {}, h("div", { class: "title" }, p.name), h("div", { class: "muted small mono" }, p.id)),
        h("div", { class: "badges" },
          breakerBadge(p),
          p.keyCount > 1 ? h("span", { class: "badge muted", title: "keys available / total" }, `${p.keysAvailable}/${p.keyCount} keys`) : null,
          privacyBadge(p.privacy))),
      p.enabled && left > 0 ? h("div", { class: "notice" }, `Breaker open: the next probe in ${duration(left)}.`) : null,
      p.enabled ? modelBreakers(p) : null,
      p.enabled ? h("div", { class: "stats" },
        h("div", {}, h("b", {}, compact(p.successRequests)), h("span", {}, "success")),
        h("div", {}, h("b", {}, compact(p.failedRequests)), h("span", {}, "failed")),
        h("div", {}, h("b", {}, compact(p.rateLimitedRequests)), h("span", {}, "429s"))) : null,
      p.enabled ? h("div", { class: "small" }, h("span", { class: "muted" }, "Tokens (24 h) "),
        `in ${compact(usage.promptTokens || 0)} · out ${compact(usage.completionTokens || 0)}`,
        h("span", { class: "muted" }, ` · ${compact(usage.requestCount || 0)} answers`)) : null,
      p.enabled && (p.keys || []).length ? h("div", { class: "keys" }, ...(p.keys || []).map((k) => keyRow(p, k))) : null,
      p.lastErrorMessage ? h("div", { class: "small" }, h("span", { class: "muted" }, `Last error (${ago(p.lastError)}): `),
        h("span", { class: "error-text" }, p.lastErrorMessage)) : null,
      p.note ? h("div", { class: "muted small" }, p.note) : null,
      p.keyEnv ? h("div", { class: "muted small", "data-field": "key-env" }, "Keys from ", h("code", {}, p.keyEnv)) : null,
      p.enabled ? h("div", { class: "muted small" }, `Last used ${ago(p.lastUsedAt)}`) : null,
      p.enabled ? h("div", { class: "card-actions" },
        h("button", {
          type: "button",
          class: notClosed ? "danger" : "",
          "data-reset": p.id,
          disabled: !admin,
          title: admin ? "Close the breaker and clear key cooldowns" : "Needs the admin key",
          onclick: () => resetProvider(p.id),
        }, "Reset breaker")) : null);
  }));
}

function renderAdapters() {
  const admin = state.access.admin;
  $("#reload-all").disabled = !admin;
  const notice = !admin ? "Adapter management needs the admin key." : state.pluginsError;
  $("#adapters-notice").replaceChildren(...(notice ? [h("div", { class: "notice" }, notice)] : []));
  const plugins = (state.plugins && state.plugins.plugins) || [];
  $("#adapters").replaceChildren(...plugins.map((a) => {
    const kind = { active: "ok", canary: "warn", failed: "bad", disabled: "muted" }[a.state] || "info";
    const err = a.last_error;
    const canary = a.canary;
    const file = h("input", { type: "file", accept: ".wasm,application/wasm", hidden: true,
      onchange: (e) => e.target.files && e.target.files[0] && uploadAdapter(a.id, e.target.files[0]) });
    return h("article", { class: "panel", "data-adapter": a.id },
      h("div", { class: "card-head" },
        h("div", {}, h("div", { class: "title" }, a.id), h("div", { class: "muted small mono" }, a.component || "")),
        h("div", { class: "badges" }, h("span", { class: `badge ${kind}`, "data-state": a.state }, a.state))),
      h("dl", { class: "kv" },
        h("dt", {}, "Version"), h("dd", { "data-field": "version" }, a.version || "–"),
        h("dt", {}, "Hash"), h("dd", { class: "mono", title: a.hash || "", "data-field": "hash" }, a.hash ? a.hash.slice(0, 16) : "–"),
        h("dt", {}, "Source"), h("dd", { "data-field": "source" }, a.source || "–"),
        h("dt", {}, "Loaded"), h("dd", { "data-field": "loaded" }, a.loaded_at ? `${clock(a.loaded_at)} (${ago(a.loaded_at)})` : "–"),
        h("dt", {}, "Calls"), h("dd", {}, `${compact(a.calls || 0)} · ${compact(a.traps || 0)} traps`),
        h("dt", {}, "Time inside"), h("dd", {}, `${compact(a.busy_ms || 0)} ms total · p50 ${a.p50_us ?? "–"} µs · p99 ${a.p99_us ?? "–"} µs`),
        a.sandbox ? [h("dt", {}, "Sandbox"), h("dd", {}, `${a.sandbox.memory_mb} MiB · ${a.sandbox.cpu_ms} ms CPU per call`)] : null,
        a.note ? [h("dt", {}, "Note"), h("dd", {}, a.note)] : null),
      canary ? h("div", { class: "notice" },
        `Canary at ${canary.percent}%: version ${canary.candidate && canary.candidate.version} ` +
        `(${canary.candidate && String(canary.candidate.hash || "").slice(0, 12)}) — ` +
        `${canary.candidate_calls} calls, ${canary.candidate_failures} failures vs current ${canary.current_calls} calls, ${canary.current_failures} failures`) : null,
      a.pinned_upload ? h("div", { class: "notice", "data-field": "pinned" },
        `Pinned by an upload (${String(a.pinned_upload.hash || "").slice(0, 12)}): the component file is not loaded, across restarts too, until you switch back. `,
        h("button", { type: "button", disabled: !admin, onclick: () => reloadFromFile(a.id) }, "Use the file")) : null,
      err ? h("div", { class: "small", "data-field": "last-error" }, h("span", { class: "muted" }, `Last reload refused at ${err.step} (${ago(err.at)}): `),
        h("span", { class: "error-text" }, err.error)) : null,
      h("div", { class: "card-actions" },
        file,
        h("button", { type: "button", disabled: !admin, onclick: () => file.click(), title: "Upload a new component (.wasm); it is checked before it serves" }, "Upload…"),
        h("button", { type: "button", disabled: !admin, "data-reload": a.id, onclick: () => reloadAdapters(a.id) }, "Reload")));
  }));
  const events = (state.plugins && state.plugins.events) || [];
  $("#adapter-events-panel").hidden = events.length === 0;
  $("#adapter-events").replaceChildren(...events.slice(-20).reverse().map((e) => h("li", {}, e)));
}

function updateProviderFilter() {
  const select = $("#filter-provider");
  const ids = new Set((state.status && state.status.providers || []).filter((p) => p.enabled).map((p) => p.id));
  for (const e of state.log) if (e.provider) ids.add(e.provider);
  const have = new Set([...select.options].map((o) => o.value));
  for (const id of [...ids].sort()) if (!have.has(id)) select.append(h("option", { value: id }, id));
}

function statusBadge(e) {
  if (e.status === "success") return h("span", { class: "badge ok" }, "OK");
  if (e.status === "all_providers_failed") return h("span", { class: "badge bad", title: e.error || "" }, "FAIL");
  return h("span", { class: "badge bad", title: e.error || "" }, "ERR");
}

function renderRequests() {
  const { provider: wantProvider, status: wantStatus } = state.filter;
  const rows = state.log
    .filter((e) => !wantProvider || e.provider === wantProvider || (!e.provider && (e.attempted || []).includes(wantProvider)))
    .filter((e) => !wantStatus || e.status === wantStatus)
    .slice(0, ROWS_SHOWN);
  $("#log-empty").hidden = rows.length > 0;
  $("#log-empty").textContent = state.log.length ? "No request matches the filters." : "No requests yet. Waiting for traffic…";
  $("#log tbody").replaceChildren(...rows.map((e) => h("tr", {
    "data-id": e.id,
    "data-status": e.status,
    "aria-selected": String(e.id === state.selected),
    tabindex: 0,
    onclick: () => select(e.id),
    onkeydown: (ev) => (ev.key === "Enter" || ev.key === " ") && select(e.id),
  },
  h("td", { class: "mono" }, clock(e.timestamp)),
  h("td", {}, statusBadge(e)),
  h("td", {}, e.requestedModel),
  h("td", {}, e.provider || "–"),
  h("td", { class: "hide-narrow" }, e.routeReason || "–"),
  h("td", { class: "hide-narrow" }, e.cached ? h("span", { class: "badge info" }, "CACHE") : ""),
  h("td", { class: "num" }, e.promptTokens != null ? `${e.promptTokens}→${e.completionTokens ?? 0}` : "–"),
  h("td", { class: `num${e.latencyMs > 2000 ? " slow" : ""}` }, `${e.latencyMs} ms`))));
  renderDetail();
}

function select(id) {
  state.selected = id;
  markDirty("requests");
}

function renderDetail() {
  const e = state.log.find((x) => x.id === state.selected);
  const panel = $("#detail");
  if (!e) {
    panel.replaceChildren(h("p", { class: "muted" }, "Click a request to see its route attempts and headers."));
    return;
  }
  const attempted = e.attempted || [];
  const headers = [["X-Request-Id", e.id]];
  if (e.status === "success") {
    headers.push(
      ["X-FreeLLM-Provider", e.provider],
      ["X-FreeLLM-Model", e.resolvedModel],
      ["X-FreeLLM-Requested-Model", e.requestedModel],
      ["X-FreeLLM-Cached", String(!!e.cached)],
      ["X-FreeLLM-Route-Reason", e.routeReason],
    );
  }
  panel.replaceChildren(
    h("h3", { class: "mono" }, e.id),
    h("dl", { class: "kv" },
      h("dt", {}, "Time"), h("dd", {}, `${clock(e.timestamp)} (${ago(e.timestamp)})`),
      h("dt", {}, "Status"), h("dd", {}, e.status),
      h("dt", {}, "Model"), h("dd", {}, e.requestedModel),
      h("dt", {}, "Answered by"), h("dd", {}, e.resolvedModel || "–"),
      h("dt", {}, "Route reason"), h("dd", {}, e.routeReason || "–"),
      h("dt", {}, "Streaming"), h("dd", {}, e.streaming ? "yes" : "no"),
      h("dt", {}, "Cached"), h("dd", {}, e.cached ? "yes" : "no"),
      h("dt", {}, "Latency"), h("dd", {}, `${e.latencyMs} ms`),
      h("dt", {}, "Tokens"), h("dd", {}, e.promptTokens != null ? `${e.promptTokens} prompt · ${e.completionTokens ?? 0} completion` : "–"),
      e.finishReason ? [h("dt", {}, "Finish"), h("dd", {}, e.finishReason)] : null,
      e.error ? [h("dt", {}, "Error"), h("dd", { class: "error-text" }, e.error)] : null),
    h("h3", {}, "Route attempts"),
    attempted.length
      ? h("ol", { class: "attempts", id: "attempts" }, ...attempted.map((id, i) => {
        const answered = e.status === "success" && i === attempted.length - 1 && id === e.provider;
        return h("li", {}, id, " ", h("span", { class: `badge ${answered ? "ok" : "bad"}` }, answered ? "answered" : "failed"));
      }))
      : h("p", { class: "muted small", id: "attempts" }, e.cached ? "Answered from the cache: no upstream attempt." : "No upstream attempt."),
    h("h3", {}, "Response headers"),
    h("dl", { class: "kv mono" }, ...headers.filter(([, v]) => v != null).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
  );
}

function renderKeys() {
  const notice = !state.access.admin ? "Listing virtual keys needs the admin key." : state.vkeysError;
  const v = state.vkeys;
  const parts = [];
  if (notice) parts.push(h("div", { class: "notice", "data-notice": "vkeys" }, notice));
  if (v && v.lastReloadError) parts.push(h("div", { class: "notice" }, `Keys file not reloaded: ${v.lastReloadError}`));
  if (v && v.count === 0) parts.push(h("p", { class: "muted" }, "No virtual keys configured (FREELLM_VIRTUAL_KEYS_PATH)."));
  if (v && v.count > 0 && v.softCapWarning) parts.push(h("p", { class: "muted small" }, v.softCapWarning));
  $("#vkeys-notice").replaceChildren(...parts);
  $("#vkeys").replaceChildren(...((v && v.keys) || []).map((k) => h("article", { class: "panel", "data-vkey": k.maskedId },
    h("div", { class: "card-head" },
      h("div", {}, h("div", { class: "title" }, k.label || "(no label)"), h("div", { class: "muted small mono" }, k.maskedId)),
      h("div", { class: "badges" }, k.expired ? h("span", { class: "badge bad" }, "Expired") : null)),
    h("div", { class: "small" }, `Requests (24 h): ${compact(k.requestsInWindow)}${k.dailyRequestCap ? ` / ${compact(k.dailyRequestCap)}` : " · unlimited"}`),
    k.dailyRequestCap ? bar(k.requestsInWindow, k.dailyRequestCap) : null,
    h("div", { class: "small" }, `Tokens (24 h): ${compact(k.tokensInWindow)}${k.dailyTokenCap ? ` / ${compact(k.dailyTokenCap)}` : " · unlimited"}`),
    k.dailyTokenCap ? bar(k.tokensInWindow, k.dailyTokenCap) : null,
    k.allowedModels && k.allowedModels.length
      ? h("div", { class: "badges small" }, ...k.allowedModels.map((m) => h("span", { class: "badge muted" }, m)))
      : h("div", { class: "muted small" }, "All models"),
    k.expiresAt ? h("div", { class: "muted small" }, `Expires ${new Date(k.expiresAt).toLocaleString()}`) : null)));
  const bt = state.status.browserTokens || {};
  $("#browser-tokens").replaceChildren(
    h("div", {}, h("span", { class: `badge ${bt.enabled ? "ok" : "muted"}`, "data-browser-tokens": bt.enabled ? "enabled" : "disabled" },
      bt.enabled ? "Enabled" : "Disabled")),
    h("dl", { class: "kv" },
      h("dt", {}, "Max lifetime"), h("dd", {}, `${Math.round((bt.maxTtlSeconds || 0) / 60)} min`),
      h("dt", {}, "Minimum secret"), h("dd", {}, `${bt.minSecretBytes || 32} bytes`)),
    bt.enabled
      ? h("p", { class: "muted small" }, "Mint short-lived tokens for browser apps with POST /v1/tokens/issue.")
      : h("div", { class: "notice" }, "Set FREELLM_TOKEN_SECRET (at least 32 bytes) to let browser apps use short-lived tokens."),
  );
}

// ---------------------------------------------------------------- wiring

function bindStatic() {
  $("#signin-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const key = $("#key").value.trim();
    if (key) start(key);
  });
  $("#signout").addEventListener("click", () => signOut(""));
  window.addEventListener("hashchange", () => state.status && showView(viewFromHash()));
  for (const b of document.querySelectorAll("#strategy button")) {
    b.addEventListener("click", () => setStrategy(b.dataset.strategy));
  }
  $("#reload-all").addEventListener("click", () => reloadAdapters(null));
  $("#filter-provider").addEventListener("change", (e) => {
    state.filter.provider = e.target.value;
    markDirty("requests");
  });
  $("#filter-status").addEventListener("change", (e) => {
    state.filter.status = e.target.value;
    markDirty("requests");
  });
  window.addEventListener("resize", () => markDirty("overview"));
}

boot();
