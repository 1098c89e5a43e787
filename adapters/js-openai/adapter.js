// A FreeLLM provider adapter written in JavaScript: any OpenAI-compatible
// endpoint, configured by settings. It implements the same contract as the
// Rust adapters (wit/provider.wit, world `provider`), is built into a
// component with componentize-js, and is loaded by the same host.
//
// Settings: `base_url` (default https://api.openai.com/v1), `models`
// (comma-separated, the first is the default), `display_name`. The host
// passes `id`; the key comes from `<ID>_API_KEY`.
//
// jco conventions: records are objects with camelCase fields, enums are
// kebab-case strings, variants are {tag, val}, flags are objects of
// booleans, u64 is a BigInt; a thrown plain object is a `result` error.

import { log } from "freellm:provider/host@0.1.0";

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const MIN_RETRY_MS = 1000;
const MAX_RETRY_MS = 600000;

function setting(settings, key) {
  let value;
  for (const [k, v] of settings) {
    if (k === key && v.trim() !== "") value = v.trim();
  }
  return value;
}

function header(headers, name) {
  const found = headers.find(([k]) => k.toLowerCase() === name);
  return found ? found[1] : undefined;
}

function failure(kind, message, retryAfterMs, upstreamCode) {
  return { kind, message, retryAfterMs, upstreamCode };
}

function parseJson(bytes) {
  try {
    return JSON.parse(decoder.decode(bytes));
  } catch (e) {
    return undefined;
  }
}

function isObject(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

function count(value) {
  return Number.isInteger(value) && value >= 0 ? Math.min(value, 4294967295) : undefined;
}

function usageOf(usage) {
  if (!isObject(usage)) return undefined;
  const prompt = count(usage.prompt_tokens);
  const completion = count(usage.completion_tokens);
  const total = count(usage.total_tokens);
  if (prompt === undefined && completion === undefined && total === undefined) return undefined;
  return {
    promptTokens: prompt ?? 0,
    completionTokens: completion ?? 0,
    totalTokens: total ?? Math.min((prompt ?? 0) + (completion ?? 0), 4294967295),
  };
}

const FINISH = { stop: "stop", length: "length", tool_calls: "tool-calls", function_call: "tool-calls", content_filter: "content-filter" };

function finishOf(choices) {
  const reason = Array.isArray(choices) && isObject(choices[0]) ? choices[0].finish_reason : undefined;
  return typeof reason === "string" ? FINISH[reason] ?? "other" : undefined;
}

function errorMessage(body) {
  const value = parseJson(body);
  const error = isObject(value) ? value.error : undefined;
  if (isObject(error)) {
    const code = error.code ?? error.type;
    return { message: typeof error.message === "string" ? error.message : undefined, code: code === undefined || code === null ? undefined : String(code) };
  }
  if (typeof error === "string") return { message: error };
  if (isObject(value) && typeof value.message === "string") return { message: value.message };
  return {};
}

function retryAfter(headers) {
  const value = header(headers, "retry-after");
  if (value === undefined || !/^\d+(\.\d+)?$/.test(value.trim())) return undefined;
  const ms = Math.ceil(Number(value.trim()) * 1000);
  return BigInt(Math.min(Math.max(ms, MIN_RETRY_MS), MAX_RETRY_MS));
}

class StreamNormalizer {
  constructor(ctx, head) {
    this.done = false;
  }

  push(events) {
    const out = { chunks: [], usage: undefined, finishReason: undefined, done: false };
    for (const event of events) {
      if (this.done) break;
      const data = event.data.trim();
      if (data === "") continue;
      if (data === "[DONE]") {
        this.done = true;
        break;
      }
      let chunk;
      try {
        chunk = JSON.parse(data);
      } catch (e) {
        log("warn", "skipped a malformed stream event");
        continue;
      }
      if (!isObject(chunk)) continue;
      if (chunk.error !== undefined && chunk.choices === undefined) {
        const { message, code } = errorMessage(encoder.encode(data));
        throw failure("transient", message ?? "the upstream reported an error", undefined, code);
      }
      out.usage = usageOf(chunk.usage) ?? out.usage;
      out.finishReason = finishOf(chunk.choices) ?? out.finishReason;
      out.chunks.push(encoder.encode(data));
    }
    out.done = this.done;
    return out;
  }

  finish() {
    return { chunks: [], usage: undefined, finishReason: undefined, done: false };
  }
}

export const adapter = {
  configure(settings) {
    const id = setting(settings, "id") ?? "js-openai";
    const models = (setting(settings, "models") ?? "gpt-4o-mini").split(",").map((m) => m.trim()).filter((m) => m !== "");
    if (models.length === 0) throw "setting `models`: lists no model";
    const baseUrl = (setting(settings, "base_url") ?? "https://api.openai.com/v1").replace(/\/+$/, "");
    if (!/^https?:\/\/[^/\s]+/.test(baseUrl)) throw `setting \`base_url\`: "${baseUrl}" is not an http(s) URL`;
    const tags = { fast: true, smart: false, reasoning: false, vision: false, tools: true };
    return {
      id,
      displayName: setting(settings, "display_name") ?? id,
      adapterVersion: "0.1.0",
      defaultBaseUrl: baseUrl,
      keyEnv: `${id.toUpperCase().replace(/-/g, "_")}_API_KEY`,
      auth: { tag: "bearer" },
      streamFraming: "sse",
      capabilities: { tools: true, jsonMode: true, jsonSchema: false, vision: false, streamUsage: true, reasoning: false, assistantPrefill: false },
      models: models.map((model) => ({ id: model, contextWindow: 0, tags })),
      defaultModel: models[0],
      privacy: {
        policy: "configurable",
        sourceUrl: baseUrl,
        lastVerified: "unverified",
        note: "Privacy policy not stated by the operator; prompts may be used for training.",
      },
      limits: { requestsPerMinute: undefined, requestsPerDay: undefined, tokensPerMinute: undefined, tokensPerDay: undefined, sharedPerProject: false },
    };
  },

  mapRequest(ctx, body) {
    const request = parseJson(body);
    if (!isObject(request) || !Array.isArray(request.messages)) {
      throw failure("request-invalid", "invalid chat request body");
    }
    request.model = ctx.upstreamModel;
    if (ctx.isStream) request.stream = true;
    else if (request.stream === true) request.stream = false;
    return {
      method: "post",
      path: "/chat/completions",
      headers: [["content-type", "application/json"]],
      body: encoder.encode(JSON.stringify(request)),
    };
  },

  normalizeResponse(ctx, head, body) {
    const answer = parseJson(body);
    if (!isObject(answer) || !Array.isArray(answer.choices)) {
      const { message, code } = errorMessage(body);
      throw failure("transient", message ?? "malformed upstream answer", undefined, code);
    }
    return { body, usage: usageOf(answer.usage), finishReason: finishOf(answer.choices) };
  },

  classifyFailure(ctx, head, body) {
    const { message, code } = errorMessage(body);
    const text = (message ?? "").toLowerCase();
    const status = head.status;
    let kind = "transient";
    if (status === 429) kind = /per day|daily|per month|monthly|quota/.test(text) && !/per minute/.test(text) ? "quota-exhausted" : "rate-limited";
    else if (status === 402) kind = "quota-exhausted";
    else if (status === 401 || status === 403) kind = "key-invalid";
    else if (status === 413) kind = "context-length";
    else if (status === 400 || status === 404 || status === 422) kind = /context|too many tokens/.test(text) ? "context-length" : "request-invalid";
    const retry = kind === "rate-limited" || kind === "quota-exhausted" || kind === "transient" ? retryAfter(head.headers) : undefined;
    return failure(kind, message ?? `${status} from upstream`, retry, code);
  },

  StreamNormalizer,
};
