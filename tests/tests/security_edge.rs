//! End-to-end: the server edge holds against hostile clients. Every body
//! has a limit checked while it is read (chunked bodies included), slow or
//! idle connections are cut after their timeouts, connections past the
//! limit are refused while the gateway keeps serving, SIGTERM drains within
//! the grace and ends open streams with an error event, and refused
//! adapter uploads leave nothing behind.

use std::time::{Duration, Instant};

use freellm_e2e::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

async fn gateway(pairs: &[(&str, &str)]) -> Gateway {
    Gateway::start_with(GatewayOptions { config: default_config(), env: env(pairs) }).await
}

async fn connect(gw: &Gateway) -> TcpStream {
    TcpStream::connect(gw.url.trim_start_matches("http://")).await.expect("connect to the gateway")
}

/// The gateway closes `conn` without another byte, no sooner than
/// `not_before` from now (and within 5 s).
async fn assert_closed_silently(conn: &mut TcpStream, not_before: Duration, what: &str) {
    let started = Instant::now();
    let (rest, closed) = read_until_closed(conn, Duration::from_secs(5)).await;
    assert!(closed && rest.is_empty(), "{what} stayed open: {rest}");
    assert!(started.elapsed() >= not_before, "{what} was closed too early: {:?}", started.elapsed());
}

/// Reads until the peer closes or `within` passes; returns what arrived and
/// whether the peer closed.
async fn read_until_closed(conn: &mut TcpStream, within: Duration) -> (String, bool) {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    let mut buf = [0u8; 8192];
    loop {
        match tokio::time::timeout_at(deadline, conn.read(&mut buf)).await {
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), false),
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&got).into_owned(), true),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Reads one response whose head and body fit what arrived so far (the
/// connection stays open): returns it once the `Content-Length` body is in.
async fn read_response(conn: &mut TcpStream, within: Duration) -> String {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    let mut buf = [0u8; 8192];
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some(head_end) = text.find("\r\n\r\n") {
            let length = text[..head_end]
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            if got.len() >= head_end + 4 + length {
                return text;
            }
        }
        match tokio::time::timeout_at(deadline, conn.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => return text,
        }
    }
}

fn status_of(response: &str) -> u16 {
    response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

fn error_of(response: &str) -> Value {
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str::<Value>(body).unwrap_or(Value::Null)["error"].clone()
}

/// Sends `head` and then `total` bytes of chunked body (16 KiB chunks)
/// while reading the answer; the writer's errors are expected (the gateway
/// stops reading once it refused).
async fn chunked_exchange(gw: &Gateway, head: &str, total: usize) -> String {
    let conn = connect(gw).await;
    let (mut reader, mut writer) = conn.into_split();
    let head = head.to_owned();
    let sender = tokio::spawn(async move {
        writer.write_all(head.as_bytes()).await?;
        let chunk = vec![b'a'; 16 << 10];
        let mut sent = 0;
        while sent < total {
            writer.write_all(format!("{:x}\r\n", chunk.len()).as_bytes()).await?;
            writer.write_all(&chunk).await?;
            writer.write_all(b"\r\n").await?;
            sent += chunk.len();
        }
        writer.write_all(b"0\r\n\r\n").await
    });
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, reader.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    sender.abort();
    String::from_utf8_lossy(&got).into_owned()
}

fn assert_envelope(response: &str, status: u16, code: &str) {
    assert_eq!(status_of(response), status, "{response}");
    let error = error_of(response);
    assert_eq!(error["code"], code, "{response}");
    assert!(error["type"].is_string() && error["message"].is_string(), "{response}");
    assert!(error["request_id"].as_str().is_some_and(|id| !id.is_empty()), "{response}");
}

#[tokio::test]
async fn chunked_oversized_bodies_to_every_control_endpoint_get_413_in_the_envelope() {
    let mut gw = gateway(&[("FREELLM_TOKEN_SECRET", "0123456789abcdef0123456789abcdef")]).await;
    let endpoints = [
        ("POST", "/v1/tokens/issue"),
        ("PATCH", "/v1/status/routing"),
        ("POST", "/v1/plugins/reload"),
        ("POST", "/v1/plugins/groq/canary"),
        ("PATCH", "/api/v1/status/routing"),
    ];
    for (method, path) in endpoints {
        // 2 MiB without Content-Length, against the 64 KiB control limit.
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
        let response = chunked_exchange(&gw, &head, 2 << 20).await;
        assert_envelope(&response, 413, "payload_too_large");
        // A declared oversized length is refused before any byte of it.
        let mut conn = connect(&gw).await;
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 1073741824\r\n\r\n"
        );
        conn.write_all(head.as_bytes()).await.unwrap();
        let response = read_response(&mut conn, Duration::from_secs(5)).await;
        assert_envelope(&response, 413, "payload_too_large");
        gw.assert_healthy().await;
    }
    // A body under the limit still works.
    let r = gw
        .http
        .patch(format!("{}/v1/status/routing", gw.url))
        .json(&serde_json::json!({"strategy": "round_robin"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn an_oversized_upload_is_refused_while_it_is_read_not_after() {
    let mut gw = gateway(&[("FREELLM_MAX_UPLOAD_BYTES", "65536")]).await;
    let head = "POST /v1/plugins/groq HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/wasm\r\nTransfer-Encoding: chunked\r\n\r\n";
    let started = Instant::now();
    let response = chunked_exchange(&gw, head, 64 << 20).await;
    assert_envelope(&response, 413, "payload_too_large");
    assert!(started.elapsed() < Duration::from_secs(5), "refused only after {:?}", started.elapsed());
    // Declared: the answer comes without a byte of the body sent.
    let mut conn = connect(&gw).await;
    conn.write_all(b"POST /v1/plugins/groq HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/wasm\r\nContent-Length: 1073741824\r\n\r\n").await.unwrap();
    let response = read_response(&mut conn, Duration::from_secs(5)).await;
    assert_envelope(&response, 413, "payload_too_large");
    gw.assert_healthy().await;
    assert!(!gw.data_dir.path().join("data/uploads").read_dir().is_ok_and(|mut d| d.next().is_some()));
}

#[tokio::test]
async fn partial_headers_are_cut_after_the_header_read_timeout() {
    let mut gw = gateway(&[("FREELLM_HEADER_READ_TIMEOUT_MS", "500"), ("FREELLM_IDLE_TIMEOUT_MS", "10000")]).await;
    let mut conn = connect(&gw).await;
    let started = Instant::now();
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ").await.unwrap();
    let (_, closed) = read_until_closed(&mut conn, Duration::from_secs(5)).await;
    assert!(closed, "a connection with a partial head was held past the timeout");
    assert!(started.elapsed() >= Duration::from_millis(400), "cut too early: {:?}", started.elapsed());
    gw.assert_healthy().await;
}

#[tokio::test]
async fn a_slow_body_is_answered_408_after_the_body_read_timeout() {
    let mut gw = gateway(&[("FREELLM_BODY_READ_TIMEOUT_MS", "600")]).await;
    for (method, path) in [("PATCH", "/v1/status/routing"), ("POST", "/v1/chat/completions")] {
        let mut conn = connect(&gw).await;
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
        );
        conn.write_all(head.as_bytes()).await.unwrap();
        let started = Instant::now();
        // One byte every 200 ms: never complete within the timeout.
        let (mut reader, mut writer) = conn.into_split();
        let dribble = tokio::spawn(async move {
            for _ in 0..20 {
                if writer.write_all(b" ").await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(5), reader.read(&mut buf)).await {
            if n == 0 || String::from_utf8_lossy(&got).contains("request_id") {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        dribble.abort();
        let response = String::from_utf8_lossy(&got).into_owned();
        assert_envelope(&response, 408, "request_timeout");
        assert!(started.elapsed() < Duration::from_secs(3), "answered after {:?}", started.elapsed());
    }
    gw.assert_healthy().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let mut gw = gateway(&[("FREELLM_IDLE_TIMEOUT_MS", "400")]).await;
    let mut conn = connect(&gw).await;
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await.unwrap();
    let response = read_response(&mut conn, Duration::from_secs(5)).await;
    assert_eq!(status_of(&response), 200, "{response}");
    assert_closed_silently(&mut conn, Duration::from_millis(300), "the idle connection").await;
    gw.assert_healthy().await;
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_idle_timeout() {
    let mut gw = gateway(&[("FREELLM_IDLE_TIMEOUT_MS", "400")]).await;
    let mut conn = connect(&gw).await;
    assert_closed_silently(&mut conn, Duration::from_millis(300), "the silent connection").await;
    gw.assert_healthy().await;
}

#[tokio::test]
async fn a_client_speaking_http2_with_prior_knowledge_is_answered() {
    use http_body_util::{BodyExt, Full};
    let mut gw = gateway(&[]).await;
    let io = hyper_util::rt::TokioIo::new(connect(&gw).await);
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io).await.expect("h2 handshake");
    tokio::spawn(connection);
    for path in ["/healthz", "/v1/models"] {
        let request =
            hyper::Request::get(format!("{}{path}", gw.url)).body(Full::new(bytes::Bytes::new())).expect("request");
        let response = tokio::time::timeout(Duration::from_secs(10), sender.send_request(request))
            .await
            .expect("an answer in time")
            .expect("an HTTP/2 answer");
        assert_eq!(response.version(), hyper::Version::HTTP_2);
        assert_eq!(response.status(), 200, "{path}");
        let body = response.into_body().collect().await.expect("body").to_bytes();
        assert!(serde_json::from_slice::<Value>(&body).is_ok(), "{path}: {}", String::from_utf8_lossy(&body));
    }
    gw.assert_healthy().await;
}

#[tokio::test]
async fn connections_past_the_limit_are_refused_while_admitted_clients_are_served() {
    let mut gw = gateway(&[
        ("FREELLM_MAX_CONNECTIONS", "3"),
        ("FREELLM_IDLE_TIMEOUT_MS", "300"),
        ("FREELLM_BODY_READ_TIMEOUT_MS", "10000"),
    ])
    .await;
    // Let the harness's pooled connection go idle and be closed.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let body = br#"{"strategy":"round_robin"}"#;
    let head = format!(
        "PATCH /v1/status/routing HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    // Three clients in the middle of sending a request fill the slots.
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut conn = connect(&gw).await;
        conn.write_all(head.as_bytes()).await.unwrap();
        conn.write_all(&body[..5]).await.unwrap();
        held.push(conn);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = connect(&gw).await;
    extra.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await.unwrap();
    let (response, closed) = read_until_closed(&mut extra, Duration::from_secs(5)).await;
    assert_envelope(&response, 503, "too_many_connections");
    assert!(response.to_ascii_lowercase().contains("retry-after: 1"), "{response}");
    assert!(closed, "the refused connection is closed");
    // An admitted client finishes its request meanwhile.
    let mut first = held.remove(0);
    first.write_all(&body[5..]).await.unwrap();
    let response = read_response(&mut first, Duration::from_secs(5)).await;
    assert_eq!(status_of(&response), 200, "{response}");
    drop(first);
    // Its slot frees: a new client is served again.
    served_within(&gw, Duration::from_secs(5), "after a slot freed").await;
    // The gateway notices the other clients' closes on its own time: poll
    // until every slot is free again rather than race it.
    drop(held);
    served_within(&gw, Duration::from_secs(5), "after every held client left").await;
    gw.assert_healthy().await;
}

/// Polls `/healthz` on fresh connections until one is served 200, failing
/// after `within`: a closed client's slot is freed when the gateway reads
/// its end of the connection, not when the client drops it.
async fn served_within(gw: &Gateway, within: Duration, when: &str) {
    let deadline = Instant::now() + within;
    loop {
        let r = reqwest::Client::new().get(format!("{}/healthz", gw.url)).send().await;
        if r.as_ref().is_ok_and(|r| r.status() == 200) {
            return;
        }
        assert!(Instant::now() < deadline, "no client served {when}: {r:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn sigterm_with_a_half_sent_request_exits_within_the_grace() {
    let mut gw = gateway(&[("FREELLM_SHUTDOWN_GRACE_MS", "1000"), ("FREELLM_BODY_READ_TIMEOUT_MS", "60000")]).await;
    let mut conn = connect(&gw).await;
    conn.write_all(b"PATCH /v1/status/routing HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"str")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    gw.signal_terminate();
    let status = gw.wait_exit(Duration::from_secs(6)).await;
    let status = status.unwrap_or_else(|| panic!("still running 6 s after SIGTERM:\n{}", gw.log()));
    assert!(status.success(), "{status}:\n{}", gw.log());
    assert!(started.elapsed() < Duration::from_millis(3500), "exited after {:?}", started.elapsed());
    assert!(started.elapsed() >= Duration::from_millis(900), "did not wait for the grace: {:?}", started.elapsed());
    assert!(gw.log().contains("counters persisted"), "{}", gw.log());
}

#[tokio::test]
async fn sigterm_with_an_open_stream_ends_it_with_a_shutdown_error_event_and_exits() {
    let mock = MockUpstream::start(|_| Reply::Stream {
        pieces: vec![
            (Duration::ZERO, format!("data: {}\n\n", chunk("Hello", None))),
            (Duration::from_secs(30), format!("data: {}\n\n", chunk(" late", Some("stop")))),
        ],
        cut: false,
    })
    .await;
    let mut gw = gateway(&[
        ("GROQ_API_KEY", "gsk_test_key_one"),
        ("GROQ_BASE_URL", &format!("{}/openai/v1", mock.url)),
        ("FREELLM_SHUTDOWN_GRACE_MS", "800"),
        ("STREAM_IDLE_TIMEOUT_MS", "0"),
    ])
    .await;
    let mut body = chat_body("groq/llama-3.3-70b-versatile");
    body["stream"] = true.into();
    let mut response = gw.chat(body).await;
    assert_eq!(response.status(), 200);
    let mut seen = String::new();
    while !seen.contains("Hello") {
        let chunk = tokio::time::timeout(Duration::from_secs(5), response.chunk()).await;
        match chunk {
            Ok(Ok(Some(bytes))) => seen.push_str(&String::from_utf8_lossy(&bytes)),
            other => panic!("no first chunk: {other:?} {seen}"),
        }
    }
    let started = Instant::now();
    gw.signal_terminate();
    let rest = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(bytes)) = response.chunk().await {
            seen.push_str(&String::from_utf8_lossy(&bytes));
        }
    })
    .await;
    assert!(rest.is_ok(), "the stream stayed open after the grace: {seen}");
    let last = seen.split("\n\n").filter(|e| e.starts_with("data: ")).last().unwrap_or_default().to_owned();
    let event: Value = serde_json::from_str(last.trim_start_matches("data: ")).unwrap_or(Value::Null);
    assert_eq!(event["error"]["code"], "shutdown", "{seen}");
    assert!(!seen.contains("[DONE]"), "{seen}");
    let status = gw.wait_exit(Duration::from_secs(5)).await;
    assert!(status.is_some_and(|s| s.success()), "{status:?}:\n{}", gw.log());
    assert!(started.elapsed() < Duration::from_secs(4), "exited after {:?}", started.elapsed());
}

fn uploads(gw: &Gateway) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(gw.data_dir.path().join("data/uploads"))
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test]
async fn rejected_uploads_leave_no_file_and_do_not_set_the_canary() {
    let mock = MockUpstream::start(|_| Reply::ok(completion("m", "Hello"))).await;
    let dir = tempfile::tempdir().unwrap();
    let component = dir.path().join("swap.wasm");
    std::fs::copy(swap_variant("v1"), &component).unwrap();
    let config = format!("[providers.swap]\ncomponent = \"{}\"\nbase_url = \"{}/v1\"\n", component.display(), mock.url);
    let gw = Gateway::start_with(GatewayOptions { config, env: vec![] }).await;
    let upload = |variant: &str, query: &str| {
        let bytes = std::fs::read(swap_variant(variant)).unwrap();
        gw.http
            .post(format!("{}/v1/plugins/swap{query}", gw.url))
            .header("content-type", "application/wasm")
            .body(bytes)
            .send()
    };
    let action = |body: &Value| body["outcomes"][0]["action"].as_str().unwrap_or_default().to_owned();

    let r: Value = upload("broken", "?canary=50").await.unwrap().json().await.unwrap();
    assert_eq!(action(&r), "rejected", "{r}");
    assert!(uploads(&gw).is_empty(), "a refused upload was kept: {:?}", uploads(&gw));
    // The refused upload's canary share did not stick: the next one swaps at once.
    let r: Value = upload("v2", "").await.unwrap().json().await.unwrap();
    assert_eq!(action(&r), "swapped", "{r}");
    assert_eq!(uploads(&gw).len(), 1, "{:?}", uploads(&gw));
    let list: Value = gw.get("/v1/plugins").await.json().await.unwrap();
    assert!(!list["events"].to_string().contains("canary share"), "{}", list["events"]);
    // A validated upload on canary keeps exactly the live and the candidate versions.
    let r: Value = upload("v1", "?canary=30").await.unwrap().json().await.unwrap();
    assert_eq!(action(&r), "canary", "{r}");
    assert_eq!(uploads(&gw).len(), 2, "{:?}", uploads(&gw));
    let r: Value = upload("broken", "?canary=70").await.unwrap().json().await.unwrap();
    assert_eq!(action(&r), "rejected", "{r}");
    assert_eq!(uploads(&gw).len(), 2, "{:?}", uploads(&gw));
    let list: Value = gw.get("/v1/plugins").await.json().await.unwrap();
    assert!(!list["events"].to_string().contains("set to 70%"), "{}", list["events"]);
}
