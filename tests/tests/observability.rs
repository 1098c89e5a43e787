//! Observability end to end: `/metrics` in the Prometheus text format
//! (checked by a parser and by a strict line-by-line validator), counters
//! that move with traffic, the `/v1/events` feed (snapshot first, then
//! requests and state changes, authenticated) and the embedded dashboard.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use freellm_e2e::*;
use futures_util::StreamExt;
use serde_json::{Value, json};

const ADMIN: &str = "admin-key-observability-0123456789";
const MASTER: &str = "master-key-observability-0123456789";

async fn groq_gateway(groq: &MockUpstream, extra: &[(&str, &str)]) -> Gateway {
    let mut env: Vec<(String, String)> =
        vec![("GROQ_API_KEY".into(), "k1".into()), ("GROQ_BASE_URL".into(), format!("{}/v1", groq.url))];
    env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    Gateway::start_with(GatewayOptions { config: default_config(), env }).await
}

fn ask(content: &str) -> Value {
    json!({"model": "groq/llama-3.3-70b-versatile", "messages": [{"role": "user", "content": content}]})
}

// ---------------------------------------------------------------- metrics

/// One sample: name, labels, value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: HashMap<String, String>,
    value: f64,
}

/// Validates every line of a text exposition (format 0.0.4) strictly and
/// returns the samples. Panics with the offending line.
fn strict_parse(text: &str) -> Vec<Sample> {
    let mut typed: HashMap<String, String> = HashMap::new();
    let mut helped: HashSet<String> = HashSet::new();
    let mut samples = Vec::new();
    let mut seen_series: HashSet<String> = HashSet::new();
    assert!(text.ends_with('\n'), "the exposition ends with a newline");
    for line in text.lines() {
        assert!(!line.is_empty(), "no blank lines expected");
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kind, name, tail) = (parts.next().unwrap(), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            assert!(valid_name(name), "bad metric name in {line:?}");
            match kind {
                "HELP" => assert!(helped.insert(name.to_owned()), "HELP twice for {name}"),
                "TYPE" => {
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&tail),
                        "bad type in {line:?}"
                    );
                    assert!(typed.insert(name.to_owned(), tail.to_owned()).is_none(), "TYPE twice for {name}");
                }
                _ => panic!("unknown comment {line:?}"),
            }
            continue;
        }
        assert!(!line.starts_with('#'), "comment without a space: {line:?}");
        let (name, labels, rest) = match line.find('{') {
            Some(open) => {
                let (labels, after) = parse_labels(&line[open + 1..], line);
                (&line[..open], labels, after)
            }
            None => {
                let space = line.find(' ').unwrap_or_else(|| panic!("no value in {line:?}"));
                (&line[..space], HashMap::new(), &line[space..])
            }
        };
        assert!(valid_name(name), "bad sample name in {line:?}");
        let value_text = rest.strip_prefix(' ').unwrap_or_else(|| panic!("no space before the value in {line:?}"));
        assert!(!value_text.contains(' '), "timestamps are not expected: {line:?}");
        let value = match value_text {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v.parse::<f64>().unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let family = family_of(name, &typed).unwrap_or_else(|| panic!("sample before its TYPE: {line:?}"));
        let kind = &typed[&family];
        if kind == "counter" {
            assert!(name.ends_with("_total"), "counter {name} should end in _total");
            assert!(value >= 0.0, "negative counter {line:?}");
        }
        let mut key: Vec<_> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        key.sort();
        assert!(seen_series.insert(format!("{name}{key:?}")), "duplicate series {line:?}");
        samples.push(Sample { name: name.to_owned(), labels, value });
    }
    check_histograms(&samples, &typed);
    samples
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Parses `a="x",b="y"}` and returns the labels and what follows `}`.
fn parse_labels<'a>(mut s: &'a str, line: &str) -> (HashMap<String, String>, &'a str) {
    let mut labels = HashMap::new();
    loop {
        if let Some(after) = s.strip_prefix('}') {
            return (labels, after);
        }
        let eq = s.find('=').unwrap_or_else(|| panic!("label without '=' in {line:?}"));
        let name = &s[..eq];
        assert!(valid_name(name) && !name.contains(':'), "bad label name {name:?} in {line:?}");
        s = s[eq + 1..].strip_prefix('"').unwrap_or_else(|| panic!("unquoted label value in {line:?}"));
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => panic!("bad escape {other:?} in {line:?}"),
                },
                Some((i, '"')) => break i,
                Some((_, '\n')) | None => panic!("unterminated label value in {line:?}"),
                Some((_, c)) => value.push(c),
            }
        };
        assert!(labels.insert(name.to_owned(), value).is_none(), "label twice in {line:?}");
        s = &s[end + 1..];
        if let Some(rest) = s.strip_prefix(',') {
            s = rest;
        }
    }
}

fn family_of(name: &str, typed: &HashMap<String, String>) -> Option<String> {
    if typed.contains_key(name) {
        return Some(name.to_owned());
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && typed.get(base).is_some_and(|t| t == "histogram")
        {
            return Some(base.to_owned());
        }
    }
    None
}

/// Buckets are cumulative, `le` ascending, `+Inf` equal to `_count`.
fn check_histograms(samples: &[Sample], typed: &HashMap<String, String>) {
    for (family, _) in typed.iter().filter(|(_, t)| *t == "histogram") {
        let mut series: HashMap<String, Vec<(f64, f64)>> = HashMap::new();
        for s in samples.iter().filter(|s| s.name == format!("{family}_bucket")) {
            let le = s.labels.get("le").expect("bucket has le");
            let le = if le == "+Inf" { f64::INFINITY } else { le.parse().expect("numeric le") };
            let mut rest: Vec<_> =
                s.labels.iter().filter(|(k, _)| *k != "le").map(|(k, v)| format!("{k}={v}")).collect();
            rest.sort();
            series.entry(rest.join(",")).or_default().push((le, s.value));
        }
        for (labels, buckets) in series {
            let mut last = (f64::NEG_INFINITY, 0.0);
            for (le, count) in &buckets {
                assert!(*le > last.0 && *count >= last.1, "{family}{{{labels}}} buckets not cumulative");
                last = (*le, *count);
            }
            assert_eq!(last.0, f64::INFINITY, "{family}{{{labels}}} has no +Inf bucket");
            let count = samples
                .iter()
                .find(|s| s.name == format!("{family}_count") && labels_match(s, &labels))
                .unwrap_or_else(|| panic!("{family}{{{labels}}} has no _count"));
            assert_eq!(count.value, last.1, "{family}{{{labels}}}: +Inf bucket != _count");
        }
    }
}

fn labels_match(s: &Sample, joined: &str) -> bool {
    let mut l: Vec<_> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    l.sort();
    l.join(",") == joined
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name && labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v)))
        .map(|s| s.value)
        .sum()
}

async fn scrape(gw: &Gateway, bearer: Option<&str>) -> (Vec<Sample>, prometheus_parse::Scrape) {
    let mut request = gw.http.get(format!("{}/metrics", gw.url));
    if let Some(b) = bearer {
        request = request.bearer_auth(b);
    }
    let r = request.send().await.expect("scrape");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/plain; version=0.0.4; charset=utf-8");
    let text = r.text().await.expect("body");
    let strict = strict_parse(&text);
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let parsed = prometheus_parse::Scrape::parse(lines).expect("prometheus-parse accepts the exposition");
    (strict, parsed)
}

#[tokio::test]
async fn metrics_are_valid_prometheus_text_and_counters_move_with_traffic() {
    let groq = MockUpstream::completing().await;
    let gw = groq_gateway(&groq, &[]).await;
    let (before, _) = scrape(&gw, None).await;
    assert_eq!(value(&before, "freellm_requests_total", &[]), 0.0);
    assert_eq!(value(&before, "freellm_breaker_state", &[("provider", "groq")]), 0.0);

    for content in ["one", "two", "one"] {
        assert_eq!(gw.chat(ask(content)).await.status(), 200, "{}", gw.log());
    }
    let (after, parsed) = scrape(&gw, None).await;
    let model = "groq/llama-3.3-70b-versatile";
    let ok = |reason: &str| {
        value(
            &after,
            "freellm_requests_total",
            &[("provider", "groq"), ("model", model), ("status", "success"), ("route_reason", reason)],
        )
    };
    assert_eq!(ok("direct"), 2.0);
    assert_eq!(ok("cache"), 1.0);
    assert_eq!(value(&after, "freellm_cache_hits_total", &[]), 1.0);
    assert_eq!(value(&after, "freellm_cache_misses_total", &[]), 2.0);
    assert_eq!(value(&after, "freellm_tokens_total", &[("provider", "groq"), ("kind", "prompt")]), 10.0);
    assert_eq!(value(&after, "freellm_tokens_total", &[("provider", "groq"), ("kind", "completion")]), 6.0);
    assert_eq!(value(&after, "freellm_upstream_latency_seconds_count", &[("provider", "groq")]), 2.0);
    assert_eq!(value(&after, "freellm_request_duration_seconds_count", &[]), 3.0);
    assert_eq!(value(&after, "freellm_gateway_overhead_seconds_count", &[]), 3.0);
    assert!(value(&after, "freellm_adapter_calls_total", &[("provider", "groq")]) >= 4.0);
    assert!(value(&after, "freellm_adapter_busy_seconds_total", &[("provider", "groq")]) > 0.0);
    assert_eq!(value(&after, "freellm_key_cooldown_seconds", &[("provider", "groq"), ("key", "0")]), 0.0);
    assert_eq!(value(&after, "freellm_upstream_attempts_total", &[("provider", "groq"), ("outcome", "success")]), 2.0);

    // The independent parser reads the same figures.
    let sample = parsed
        .samples
        .iter()
        .find(|s| s.metric == "freellm_requests_total" && s.labels.get("route_reason") == Some("cache"))
        .expect("the cache series");
    assert!(matches!(sample.value, prometheus_parse::Value::Counter(v) if v == 1.0), "{sample:?}");
    assert!(parsed.docs.contains_key("freellm_gateway_overhead_seconds"));
}

#[tokio::test]
async fn failures_and_rate_limits_show_in_the_metrics() {
    let groq = MockUpstream::start(|_| Reply::error(429, "Rate limit reached on requests per minute (RPM)")).await;
    let gw = groq_gateway(&groq, &[("CACHE_ENABLED", "false")]).await;
    let r = gw.chat(ask("x")).await;
    assert_eq!(r.status(), 429, "{}", gw.log());
    let (samples, _) = scrape(&gw, None).await;
    let failed = value(&samples, "freellm_requests_total", &[("status", "all_providers_failed"), ("provider", "none")]);
    assert_eq!(failed, 1.0);
    assert_eq!(value(&samples, "freellm_request_duration_seconds_count", &[("route_reason", "none")]), 1.0);
    assert_eq!(value(&samples, "freellm_upstream_rate_limited_total", &[("provider", "groq")]), 1.0);
    let cooldown = value(&samples, "freellm_key_cooldown_seconds", &[("provider", "groq"), ("key", "0")]);
    assert!(cooldown > 50.0 && cooldown <= 60.0, "{cooldown}");
}

#[tokio::test]
async fn metrics_need_a_credential_when_one_is_configured() {
    let groq = MockUpstream::completing().await;
    let gw = groq_gateway(&groq, &[("FREELLM_API_KEY", MASTER)]).await;
    assert_eq!(gw.get("/metrics").await.status(), 401);
    assert_eq!(gw.get("/api/metrics").await.status(), 401);
    scrape(&gw, Some(MASTER)).await;
}

// ---------------------------------------------------------------- events

/// A connected `/v1/events` reader.
struct Feed {
    stream: futures_util::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: String,
}

impl Feed {
    async fn open(gw: &Gateway, bearer: &str) -> Self {
        // No overall timeout: the feed is long-lived.
        let client = reqwest::Client::new();
        let r = client.get(format!("{}/v1/events", gw.url)).bearer_auth(bearer).send().await.expect("feed");
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "text/event-stream");
        Self { stream: r.bytes_stream().boxed(), buffer: String::new() }
    }

    /// The next event `(name, data)`; keep-alive comments are skipped.
    async fn next(&mut self) -> (String, Value) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let frame: String = self.buffer.drain(..end + 2).collect();
                let mut name = None;
                let mut data = None;
                for line in frame.lines() {
                    if let Some(n) = line.strip_prefix("event: ") {
                        name = Some(n.to_owned());
                    } else if let Some(d) = line.strip_prefix("data: ") {
                        data = Some(serde_json::from_str(d).expect("event data is JSON"));
                    } else {
                        assert!(line.is_empty() || line.starts_with(':'), "unexpected line {line:?}");
                    }
                }
                if let (Some(name), Some(data)) = (name, data) {
                    return (name, data);
                }
                continue;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let chunk = tokio::time::timeout(left, self.stream.next()).await.expect("an event within 10 s");
            let chunk = chunk.expect("the feed is open").expect("feed bytes");
            self.buffer.push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
        }
    }

    /// Skips events until one named `name` matches `pred`.
    async fn until(&mut self, name: &str, pred: impl Fn(&Value) -> bool) -> Value {
        loop {
            let (n, data) = self.next().await;
            if n == name && pred(&data) {
                return data;
            }
        }
    }
}

#[tokio::test]
async fn the_event_feed_needs_a_credential() {
    let groq = MockUpstream::completing().await;
    let gw = groq_gateway(&groq, &[("FREELLM_ADMIN_KEY", ADMIN), ("FREELLM_API_KEY", MASTER)]).await;
    assert_eq!(gw.get("/v1/events").await.status(), 401);
    let wrong = gw.http.get(format!("{}/v1/events", gw.url)).bearer_auth("nope").send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    // The master key may watch (read-only), like /v1/status.
    let mut feed = Feed::open(&gw, MASTER).await;
    let (name, _) = feed.next().await;
    assert_eq!(name, "snapshot");
}

#[tokio::test]
async fn the_event_feed_sends_a_snapshot_then_requests_and_state_changes() {
    let groq = MockUpstream::completing().await;
    let gw = groq_gateway(&groq, &[("FREELLM_ADMIN_KEY", ADMIN)]).await;
    let mut feed = Feed::open(&gw, ADMIN).await;
    let (name, snapshot) = feed.next().await;
    assert_eq!(name, "snapshot");
    assert_eq!(snapshot["providers"][0]["id"], "groq");
    assert_eq!(snapshot["routingStrategy"], "quota_aware");

    let r = gw.http.post(format!("{}/v1/chat/completions", gw.url)).bearer_auth(ADMIN).json(&ask("hi")).send().await;
    let r = r.expect("chat");
    assert_eq!(r.status(), 200);
    let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    let event = feed.until("request", |e| e["id"] == id.as_str()).await;
    assert_eq!(event["type"], "request");
    assert_eq!(event["status"], "success");
    assert_eq!(event["provider"], "groq");
    assert_eq!(event["routeReason"], "direct");
    assert_eq!(event["promptTokens"], 5);

    let reset = gw.http.post(format!("{}/v1/status/providers/groq/reset", gw.url)).bearer_auth(ADMIN).send().await;
    assert_eq!(reset.unwrap().status(), 200);
    let event = feed.until("breaker", |_| true).await;
    assert_eq!(event, json!({"type": "breaker", "provider": "groq", "state": "closed"}));

    let patch = gw
        .http
        .patch(format!("{}/v1/status/routing", gw.url))
        .bearer_auth(ADMIN)
        .json(&json!({"strategy": "round_robin"}))
        .send()
        .await;
    assert_eq!(patch.unwrap().status(), 200);
    let event = feed.until("routing", |_| true).await;
    assert_eq!(event["strategy"], "round_robin");
}

#[tokio::test]
async fn a_breaker_opening_and_a_key_cooling_down_are_published() {
    let groq = MockUpstream::start(|_| Reply::error(503, "over capacity")).await;
    groq.enqueue([
        Reply::error(429, "Rate limit reached on requests per minute (RPM)").with_header("retry-after", "30")
    ]);
    let gw = groq_gateway(
        &groq,
        &[
            ("GROQ_API_KEY", "k1,k2"),
            ("CACHE_ENABLED", "false"),
            ("ROUTE_TRANSIENT_RETRIES", "0"),
            ("CB_FAILURE_THRESHOLD", "1"),
        ],
    )
    .await;
    let mut feed = Feed::open(&gw, "unused-open-gateway").await;
    assert_eq!(feed.next().await.0, "snapshot");
    // Key 0 is rate-limited (cooled for 30 s), key 1 answers 503: the breaker opens.
    assert_eq!(gw.chat(ask("x")).await.status(), 429, "{}", gw.log());
    let cooled = feed.until("key_cooldown", |_| true).await;
    assert_eq!(cooled["provider"], "groq");
    let wait = cooled["retry_after_ms"].as_u64().unwrap();
    assert!(wait > 29_000 && wait <= 30_000, "{cooled}");
    let opened = feed.until("breaker", |_| true).await;
    assert_eq!(
        opened,
        json!({"type": "breaker", "provider": "groq", "state": "open",
               "model": "llama-3.3-70b-versatile", "model_state": "open"})
    );
    let failed = feed.until("request", |_| true).await;
    assert_eq!(failed["attempted"], json!(["groq"]));
}

#[tokio::test]
async fn an_open_event_feed_does_not_hold_up_shutdown() {
    let groq = MockUpstream::completing().await;
    let gw = groq_gateway(&groq, &[]).await;
    let mut feed = Feed::open(&gw, "open").await;
    assert_eq!(feed.next().await.0, "snapshot");
    let started = Instant::now();
    gw.terminate().await;
    assert!(started.elapsed() < Duration::from_secs(5), "shutdown took {:?}", started.elapsed());
    // The feed ended with the server.
    let end =
        tokio::time::timeout(Duration::from_secs(5), async { while let Some(Ok(_)) = feed.stream.next().await {} })
            .await;
    assert!(end.is_ok(), "the feed is still open after shutdown");
}

// ---------------------------------------------------------------- dashboard

#[tokio::test]
async fn the_dashboard_shell_is_public_and_locked_down() {
    let groq = MockUpstream::completing().await;
    let gw = groq_gateway(&groq, &[("FREELLM_ADMIN_KEY", ADMIN)]).await;
    for path in ["/dashboard", "/dashboard/"] {
        let page = gw.get(path).await;
        assert_eq!(page.status(), 200);
        assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
        let csp = page.headers()["content-security-policy"].to_str().unwrap().to_owned();
        assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"), "{csp}");
        assert_eq!(page.headers()["x-content-type-options"], "nosniff");
        let html = page.text().await.unwrap();
        assert!(html.contains("/dashboard/app.js"));
        assert!(!html.contains("http://") && !html.contains("https://"), "no external resources");
    }
    let js = gw.get("/dashboard/app.js").await;
    assert_eq!(js.headers()["content-type"], "text/javascript; charset=utf-8");
    let css = gw.get("/dashboard/style.css").await;
    assert_eq!(css.headers()["content-type"], "text/css; charset=utf-8");
    assert_eq!(gw.get("/dashboard/nope.js").await.status(), 404);
    let session: Value = gw.get("/dashboard/session").await.json().await.unwrap();
    assert_eq!(session, json!({"protected": true}));
    // The data is not public.
    assert_eq!(gw.get("/v1/status").await.status(), 401);
    assert_eq!(gw.get("/api/dashboard").await.status(), 401);
}
