//! Hostile upstream streams: what one stream may cost (bytes, event size,
//! duration, memory), heartbeats while bytes trickle without an event, and
//! when a stream counts as an answer (committed, a success) or a failure.

use std::time::{Duration, Instant};

use freellm_e2e::*;
use serde_json::{Value, json};

const CONCRETE: &str = "groq/llama-3.3-70b-versatile";

/// groq and ollama, each on its own mock; `free-fast` tries groq first.
async fn two_providers(groq: &MockUpstream, ollama: &MockUpstream, extra: &[(&str, &str)]) -> Gateway {
    let mut env: Vec<(String, String)> = vec![
        ("GROQ_API_KEY".into(), "k1".into()),
        ("GROQ_BASE_URL".into(), format!("{}/v1", groq.url)),
        ("OLLAMA_BASE_URL".into(), ollama.url.clone()),
        ("OLLAMA_MODELS".into(), "llama3".into()),
        ("CACHE_ENABLED".into(), "false".into()),
        // One attempt per target keeps the counts exact.
        ("ROUTE_TRANSIENT_RETRIES".into(), "0".into()),
    ];
    env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    Gateway::start_with(GatewayOptions { config: default_config(), env }).await
}

fn stream_body(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "Say hello"}], "stream": true})
}

fn sse_event(payload: &str) -> String {
    format!("data: {payload}\n\n")
}

/// The whole body as text, within a bound (a hang fails the test instead of
/// stalling it).
async fn body_text(response: reqwest::Response, within: Duration) -> String {
    tokio::time::timeout(within, response.text()).await.expect("the stream ended in time").expect("stream body")
}

fn data_of(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter_map(|event| event.lines().find_map(|l| l.strip_prefix("data: ")).map(str::to_owned))
        .collect()
}

fn content_of(data: &[String]) -> String {
    data.iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| v.pointer("/choices/0/delta/content").and_then(Value::as_str).map(str::to_owned))
        .collect()
}

/// The last event, which must be an error event (and no `[DONE]` before it).
fn error_event(data: &[String]) -> Value {
    assert!(!data.iter().any(|d| d == "[DONE]"), "a cut stream must not claim completion: {data:?}");
    let last: Value = serde_json::from_str(data.last().expect("some event")).expect("JSON error event");
    assert!(last["error"].is_object(), "{last}");
    last
}

async fn provider_status(gw: &Gateway, id: &str) -> Value {
    let status: Value = gw.get("/v1/status").await.json().await.expect("status JSON");
    status["providers"].as_array().expect("providers").iter().find(|p| p["id"] == id).expect("provider").clone()
}

async fn attempts_metric(gw: &Gateway, provider: &str, outcome: &str) -> u64 {
    let text = gw.get("/metrics").await.text().await.expect("metrics");
    let series = format!("freellm_upstream_attempts_total{{provider=\"{provider}\",outcome=\"{outcome}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

/// A stream that opens with one good chunk, then sends `piece` forever.
fn endless(piece: &str, every: Duration) -> Reply {
    Reply::Repeat { prefix: sse_event(&chunk("Hi", None)), piece: piece.to_owned(), every, count: None }
}

#[tokio::test]
async fn an_endless_stream_ends_with_an_error_event_at_the_byte_cap_and_memory_stays_bounded() {
    // Real chunks, never a finish: each one's content would have been kept
    // for a continuation without a cap.
    let piece = sse_event(&chunk(&"x".repeat(4000), None));
    let groq = MockUpstream::start(move |_| endless(&piece, Duration::ZERO)).await;
    let ollama = MockUpstream::completing().await;
    let mut gw = two_providers(
        &groq,
        &ollama,
        &[("STREAM_MAX_BYTES", &(32u64 << 20).to_string()), ("STREAM_CONTINUATION_MAX_BYTES", "65536")],
    )
    .await;
    let before = gw.rss_kib();
    let started = Instant::now();
    let response = gw.chat(stream_body(CONCRETE)).await;
    assert_eq!(response.status(), 200);
    // Read it as it comes (the body is large): keep only the last events.
    let mut response = response;
    let mut tail = String::new();
    let (mut peak, mut read, mut sampled) = (0, 0usize, 0usize);
    while let Some(piece) = tokio::time::timeout(Duration::from_secs(20), response.chunk())
        .await
        .expect("the stream ended in time")
        .expect("stream body")
    {
        read += piece.len();
        tail.push_str(&String::from_utf8_lossy(&piece));
        if tail.len() > 64 << 10 {
            tail.drain(..tail.len() - (16 << 10));
        }
        if read - sampled > 256 << 10 {
            sampled = read;
            peak = peak.max(gw.rss_kib().unwrap_or(0));
        }
    }
    assert!(read > 16 << 20, "the stream ran up to the cap ({read} bytes relayed)");
    let data = data_of(&tail);
    let error = error_event(&data);
    assert_eq!(error["error"]["code"], "stream_too_large", "{error}");
    assert!(started.elapsed() < Duration::from_secs(20));
    if let Some(before) = before {
        // 32 MiB went through; the gateway kept far less of it.
        assert!(peak < before + (24 << 10), "RSS grew from {before} KiB to {peak} KiB");
    }
    let groq_status = provider_status(&gw, "groq").await;
    assert_eq!(groq_status["failedRequests"], 1, "{groq_status}");
    gw.assert_healthy().await;
}

/// Opens a stream over a raw connection with a small receive buffer and
/// reads only the response head (nothing more is taken from the socket).
async fn open_stream_unread(gw: &Gateway) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr: std::net::SocketAddr = gw.url.trim_start_matches("http://").parse().expect("gateway address");
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("receive buffer");
    let mut tcp = socket.connect(addr).await.expect("connect");
    let body = stream_body(CONCRETE).to_string();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(request.as_bytes()).await.expect("send request");
    let mut head = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(10), tcp.read_exact(&mut head))
        .await
        .expect("head in time")
        .expect("head");
    assert_eq!(&head, b"HTTP/1.1 200");
    tcp
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_after_the_write_stall_timeout_and_the_stream_released() {
    // A fast endless stream; the client takes the head and nothing else, so
    // the socket buffers fill and the gateway's writes wait.
    let piece = sse_event(&chunk(&"y".repeat(4000), None));
    let groq = MockUpstream::start(move |_| endless(&piece, Duration::ZERO)).await;
    let ollama = MockUpstream::completing().await;
    let mut gw = two_providers(
        &groq,
        &ollama,
        &[("FREELLM_WRITE_STALL_TIMEOUT_MS", "400"), ("STREAM_MAX_BYTES", &(1u64 << 30).to_string())],
    )
    .await;
    let started = Instant::now();
    let mut tcp = open_stream_unread(&gw).await;
    assert!(
        gw.wait_for_log("client closed the stream", Duration::from_secs(15)).await,
        "the stalled client's stream was not ended:\n{}",
        gw.log()
    );
    assert!(started.elapsed() < Duration::from_secs(15));
    // The connection is closed: what was buffered drains, then EOF or a reset.
    use tokio::io::AsyncReadExt;
    let mut sink = vec![0u8; 64 << 10];
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match tcp.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the gateway kept the stalled connection open");
    // A departed client is not the provider's failure.
    let groq_status = provider_status(&gw, "groq").await;
    assert_eq!(groq_status["failedRequests"], 0, "{groq_status}");
    gw.assert_healthy().await;
}

#[tokio::test]
async fn a_client_that_hangs_up_mid_stream_ends_its_relay_without_blaming_the_provider() {
    let piece = sse_event(&chunk("more", None));
    let groq = MockUpstream::start(move |_| endless(&piece, Duration::from_millis(20))).await;
    let ollama = MockUpstream::completing().await;
    let mut gw = two_providers(&groq, &ollama, &[]).await;
    let tcp = open_stream_unread(&gw).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(tcp);
    assert!(
        gw.wait_for_log("client closed the stream", Duration::from_secs(10)).await,
        "the relay of a departed client did not end:\n{}",
        gw.log()
    );
    let groq_status = provider_status(&gw, "groq").await;
    assert_eq!(groq_status["failedRequests"], 0, "{groq_status}");
    gw.assert_healthy().await;
}

#[tokio::test]
async fn an_endless_slow_stream_ends_with_an_error_event_at_the_duration_cap() {
    let piece = sse_event(&chunk("more", None));
    let groq = MockUpstream::start(move |_| endless(&piece, Duration::from_millis(20))).await;
    let ollama = MockUpstream::completing().await;
    let mut gw = two_providers(&groq, &ollama, &[("STREAM_MAX_DURATION_MS", "1500")]).await;
    let started = Instant::now();
    let text = body_text(gw.chat(stream_body(CONCRETE)).await, Duration::from_secs(10)).await;
    let elapsed = started.elapsed();
    let data = data_of(&text);
    assert!(content_of(&data).starts_with("Himore"), "{data:?}");
    let error = error_event(&data);
    assert_eq!(error["error"]["code"], "stream_too_long", "{error}");
    assert!(elapsed >= Duration::from_millis(1400) && elapsed < Duration::from_secs(5), "{elapsed:?}");
    gw.assert_healthy().await;
}

#[tokio::test]
async fn data_lines_without_a_blank_line_are_cut_at_the_event_cap_with_an_error_event() {
    let groq = MockUpstream::start(|_| endless(&format!("data: {}\n", "y".repeat(200)), Duration::ZERO)).await;
    let ollama = MockUpstream::completing().await;
    let mut gw = two_providers(&groq, &ollama, &[("STREAM_MAX_EVENT_BYTES", "65536")]).await;
    let started = Instant::now();
    let text = body_text(gw.chat(stream_body(CONCRETE)).await, Duration::from_secs(10)).await;
    let data = data_of(&text);
    assert_eq!(content_of(&data), "Hi");
    let error = error_event(&data);
    assert_eq!(error["error"]["code"], "stream_event_too_large", "{error}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    gw.assert_healthy().await;
}

/// The client's text of a stream whose upstream (groq) sends `pieces`,
/// each after its pause, then `[DONE]`; the gateway's stall and idle
/// timeouts are `(stall_ms, idle_ms)`.
async fn paced_stream(mut pieces: Vec<(Duration, String)>, (stall_ms, idle_ms): (u64, u64)) -> String {
    pieces.push((Duration::ZERO, sse_event("[DONE]")));
    let groq = MockUpstream::start(move |_| Reply::Stream { pieces: pieces.clone(), cut: false }).await;
    let ollama = MockUpstream::completing().await;
    let (stall, idle) = (stall_ms.to_string(), idle_ms.to_string());
    let gw =
        two_providers(&groq, &ollama, &[("STREAM_STALL_TIMEOUT_MS", &stall), ("STREAM_IDLE_TIMEOUT_MS", &idle)]).await;
    body_text(gw.chat(stream_body(CONCRETE)).await, Duration::from_secs(10)).await
}

#[tokio::test]
async fn heartbeats_flow_and_no_stall_is_declared_while_bytes_trickle_without_an_event() {
    // The last chunk arrives three bytes at a time, 25 ms apart, for about
    // 1.5 s: longer than the stall timeout, and no event completes meanwhile.
    let last = sse_event(&chunk("!", Some("stop")));
    let mut pieces = vec![(Duration::ZERO, sse_event(&chunk("Hi", None)))];
    let bytes = last.as_bytes();
    pieces.extend(bytes.chunks(3).map(|c| (Duration::from_millis(25), String::from_utf8_lossy(c).into_owned())));
    let text = paced_stream(pieces, (250, 300)).await;
    let heartbeats = text.matches(": keep-alive").count();
    assert!(heartbeats >= 2, "{heartbeats} heartbeats in {text}");
    let data = data_of(&text);
    assert_eq!(content_of(&data), "Hi!", "{text}");
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{text}");
    assert!(!text.contains("\"error\""), "{text}");
}

#[tokio::test]
async fn no_heartbeat_while_chunks_flow_and_one_after_a_silence_that_follows_them() {
    // Chunks every 50 ms for 1.2 s (three idle timeouts: the relay's
    // wake-up timer, armed when the stream began, fires while chunks still
    // flow and must find nothing due), then 700 ms of silence (past the
    // idle timeout, short of the stall timeout) before the last chunk.
    let mut pieces: Vec<(Duration, String)> =
        (0..24).map(|_| (Duration::from_millis(50), sse_event(&chunk("a", None)))).collect();
    pieces.push((Duration::from_millis(700), sse_event(&chunk("!", Some("stop")))));
    let text = paced_stream(pieces, (1000, 400)).await;
    let data = data_of(&text);
    assert_eq!(content_of(&data), format!("{}!", "a".repeat(24)), "{text}");
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{text}");
    let first_heartbeat = text.find(": keep-alive").unwrap_or_else(|| panic!("no heartbeat in the silence: {text}"));
    let last_flowing_chunk = text.rfind("\"content\":\"a\"").expect("the flowing chunks");
    assert!(first_heartbeat > last_flowing_chunk, "a heartbeat while chunks flowed: {text}");
    assert!(!text.contains("\"error\""), "{text}");
}

/// A first target that answers 200 with nothing usable; ollama answers.
async fn falls_over_to_the_fallback(bad: Reply) {
    let groq = MockUpstream::start(move |_| bad.clone()).await;
    let ollama =
        MockUpstream::start(|_| Reply::sse(&[&chunk("Hello", None), &chunk(" there", Some("stop")), "[DONE]"])).await;
    let gw = two_providers(&groq, &ollama, &[]).await;
    let response = gw.chat(stream_body("free-fast")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-freellm-provider"], "ollama");
    assert_eq!(response.headers()["x-freellm-route-reason"], "failover");
    let data = data_of(&body_text(response, Duration::from_secs(10)).await);
    assert_eq!(content_of(&data), "Hello there");
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    assert_eq!(groq.requests().len(), 1);
    let groq_status = provider_status(&gw, "groq").await;
    assert_eq!((groq_status["successRequests"].as_u64(), groq_status["failedRequests"].as_u64()), (Some(0), Some(1)));
    assert_eq!(attempts_metric(&gw, "groq", "failure").await, 1);
    assert_eq!(attempts_metric(&gw, "groq", "success").await, 0);
    assert_eq!(attempts_metric(&gw, "ollama", "success").await, 1);
}

#[tokio::test]
async fn a_garbage_200_fails_over_to_the_next_target() {
    falls_over_to_the_fallback(Reply::Raw {
        status: 200,
        content_type: "text/html".into(),
        body: "<html><body>Service temporarily unavailable</body></html>".into(),
    })
    .await;
}

#[tokio::test]
async fn an_empty_200_stream_fails_over_to_the_next_target() {
    falls_over_to_the_fallback(Reply::Raw {
        status: 200,
        content_type: "text/event-stream".into(),
        body: bytes::Bytes::new(),
    })
    .await;
}

#[tokio::test]
async fn an_immediate_error_event_fails_over_to_the_next_target() {
    falls_over_to_the_fallback(Reply::sse(&[r#"{"error":{"message":"overloaded","type":"server_error"}}"#])).await;
}

#[tokio::test]
async fn a_garbage_200_without_a_fallback_is_an_error_and_counts_as_a_failure() {
    let groq = MockUpstream::start(|_| Reply::Raw {
        status: 200,
        content_type: "text/plain".into(),
        body: "not an event stream".into(),
    })
    .await;
    let ollama = MockUpstream::completing().await;
    let gw = two_providers(&groq, &ollama, &[("CB_FAILURE_THRESHOLD", "2")]).await;
    for _ in 0..2 {
        let response = gw.chat(stream_body(CONCRETE)).await;
        assert_eq!(response.status(), 429);
        let body: Value = response.json().await.expect("error envelope");
        assert_eq!(body["error"]["code"], "all_providers_exhausted", "{body}");
        assert_eq!(body["error"]["attempts"][0]["outcome"], "broken_answer", "{body}");
        assert!(body["error"]["request_id"].is_string(), "{body}");
    }
    let groq_status = provider_status(&gw, "groq").await;
    assert_eq!(groq_status["successRequests"], 0, "{groq_status}");
    assert_eq!(groq_status["failedRequests"], 2, "{groq_status}");
    assert_eq!(groq_status["circuitBreakerState"], "open", "{groq_status}");
    assert_eq!(attempts_metric(&gw, "groq", "failure").await, 2);
    assert_eq!(attempts_metric(&gw, "groq", "success").await, 0);
}

#[tokio::test]
async fn a_stream_ending_without_a_finish_counts_as_a_failure_and_a_finished_one_as_a_success() {
    let groq = MockUpstream::start(|_| Reply::sse(&[&chunk("Hel", None)])).await;
    groq.enqueue([Reply::sse(&[&chunk("Hello", Some("stop")), "[DONE]"])]);
    let ollama = MockUpstream::completing().await;
    let gw = two_providers(&groq, &ollama, &[("CB_FAILURE_THRESHOLD", "2")]).await;

    let data = data_of(&body_text(gw.chat(stream_body(CONCRETE)).await, Duration::from_secs(10)).await);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let groq_status = provider_status(&gw, "groq").await;
    assert_eq!((groq_status["successRequests"].as_u64(), groq_status["failedRequests"].as_u64()), (Some(1), Some(0)));

    for _ in 0..2 {
        let data = data_of(&body_text(gw.chat(stream_body(CONCRETE)).await, Duration::from_secs(10)).await);
        assert_eq!(content_of(&data), "Hel");
        assert_eq!(error_event(&data)["error"]["code"], "stream_incomplete");
    }
    let groq_status = provider_status(&gw, "groq").await;
    assert_eq!((groq_status["successRequests"].as_u64(), groq_status["failedRequests"].as_u64()), (Some(1), Some(2)));
    assert_eq!(groq_status["circuitBreakerState"], "open", "two unfinished streams trip the breaker");
    assert_eq!(attempts_metric(&gw, "groq", "failure").await, 2);
    assert_eq!(attempts_metric(&gw, "groq", "success").await, 1);
}

#[tokio::test]
async fn streams_past_the_stream_budget_are_refused_as_busy_and_nothing_else_suffers() {
    // Each open stream holds a seat on an adapter instance for its lifetime. Past the
    // budget a new stream is the gateway's own capacity, not the
    // provider's failure: 503 gateway_at_capacity with Retry-After, plain
    // requests keep their own instances, and the breaker never hears of it
    // (a flood of streams used to open it and fail every client).
    let piece = sse_event(&chunk("more", None));
    let groq = MockUpstream::start(move |r| {
        if r.json()["stream"] == true {
            endless(&piece, Duration::from_millis(50))
        } else {
            Reply::ok(completion("llama-3.3-70b-versatile", "Hi"))
        }
    })
    .await;
    let ollama = MockUpstream::completing().await;
    let gw = two_providers(&groq, &ollama, &[("FREELLM_MAX_STREAMS", "2")]).await;

    let mut held = Vec::new();
    for _ in 0..2 {
        let mut response = gw.chat(stream_body(CONCRETE)).await;
        assert_eq!(response.status(), 200);
        let first = tokio::time::timeout(Duration::from_secs(5), response.chunk()).await.expect("first bytes in time");
        assert!(first.expect("stream body").is_some());
        held.push(response);
    }
    for _ in 0..5 {
        let refused = gw.chat(stream_body(CONCRETE)).await;
        assert_eq!(refused.status(), 503);
        assert_eq!(refused.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));
        let body: Value = refused.json().await.expect("JSON error");
        assert_eq!(body["error"]["code"], "gateway_at_capacity", "{body}");
        assert_eq!(body["error"]["type"], "server_error", "{body}");
        assert_eq!(
            body["error"]["message"],
            "The gateway is at capacity (as many streams are open as it serves at once, or every adapter \
             instance is in use); retry shortly.",
            "{body}"
        );
        assert!(body["error"]["request_id"].is_string(), "{body}");
        assert_eq!(gw.chat(chat_body(CONCRETE)).await.status(), 200, "plain requests are served");
    }
    let groq_status = provider_status(&gw, "groq").await;
    assert_eq!(groq_status["circuitBreakerState"], "closed", "{groq_status}");

    // The budget comes back when the streams end.
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let response = gw.chat(stream_body(CONCRETE)).await;
        if response.status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the slots never came back: {}", response.status());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
