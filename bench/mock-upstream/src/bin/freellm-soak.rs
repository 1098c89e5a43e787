//! The soak's other parties for `bench/soak.sh`, compiled: a slow SSE
//! upstream and the hostile clients. They share the gateway's cores, so
//! they are written to cost as little CPU as possible (one thread, plain
//! sockets, no parsing beyond what each role needs).
//!
//! ```text
//! freellm-soak upstream --port N [--interval-ms 1000]
//!     a slow SSE upstream: each request is answered 200 with one chunk
//!     every interval, forever
//! freellm-soak hostile --port N --seconds S [--streams 1000] [--idle 1000]
//!                      [--slow-headers 200] [--slow-bodies 200]
//!     holds streams, idle connections, clients sending their head one byte
//!     every 5 s and clients sending their body one byte every 5 s;
//!     reconnects whatever the gateway cuts; prints its counters as one JSON
//!     line every 5 s and at the end
//! ```
//!
//! Every address is 127.0.0.1.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{Instant, sleep, timeout};

const HOST: std::net::Ipv4Addr = std::net::Ipv4Addr::LOCALHOST;
const STREAM_BODY: &str =
    r#"{"model":"mistral/mistral-small-latest","stream":true,"messages":[{"role":"user","content":"soak"}]}"#;
/// How long a client sending its request slowly waits between two bytes.
const SLOW_STEP: Duration = Duration::from_secs(5);

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(role) = args.first().cloned() else { usage("a role: upstream or hostile") };
    let flag = |name: &str, default: Option<u64>| -> u64 {
        match args.iter().position(|a| a == name) {
            Some(i) => args
                .get(i + 1)
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| usage(&format!("{name} takes a whole number"))),
            None => default.unwrap_or_else(|| usage(&format!("{name} is required"))),
        }
    };
    let port = u16::try_from(flag("--port", None)).unwrap_or_else(|_| usage("--port is a port"));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
    match role.as_str() {
        "upstream" => runtime.block_on(upstream(port, Duration::from_millis(flag("--interval-ms", Some(1000))))),
        "hostile" => {
            let plan = Hostile {
                port,
                seconds: flag("--seconds", None),
                streams: flag("--streams", Some(1000)),
                idle: flag("--idle", Some(1000)),
                slow_headers: flag("--slow-headers", Some(200)),
                slow_bodies: flag("--slow-bodies", Some(200)),
            };
            runtime.block_on(hostile(plan));
        }
        other => usage(&format!("unknown role {other:?}")),
    }
}

fn usage(problem: &str) -> ! {
    eprintln!(
        "freellm-soak: {problem}\nusage: freellm-soak upstream --port N [--interval-ms MS]\n       freellm-soak hostile --port N --seconds S [--streams N] [--idle N] [--slow-headers N] [--slow-bodies N]"
    );
    std::process::exit(2)
}

// ------------------------------------------------------------------ upstream

async fn upstream(port: u16, interval: Duration) {
    let socket = TcpSocket::new_v4().expect("a socket");
    socket.set_reuseaddr(true).expect("SO_REUSEADDR");
    socket.bind((HOST, port).into()).unwrap_or_else(|e| usage(&format!("cannot listen on {port}: {e}")));
    let listener = socket.listen(4096).expect("listen");
    println!("listening on 127.0.0.1:{port}");
    loop {
        let Ok((conn, _)) = listener.accept().await else { continue };
        tokio::spawn(upstream_conn(conn, interval));
    }
}

/// Reads one request, then streams a chunk every `interval` until the
/// gateway goes away.
async fn upstream_conn(mut conn: TcpStream, interval: Duration) {
    let mut buf = Vec::with_capacity(2048);
    let mut piece = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        match conn.read(&mut piece).await {
            Ok(0) | Err(_) => return,
            Ok(n) if buf.len() + n > 64 * 1024 => return,
            Ok(n) => buf.extend_from_slice(&piece[..n]),
        }
    };
    let mut body_left = content_length(&buf[..head_end]).saturating_sub(buf.len() - head_end);
    while body_left > 0 {
        match conn.read(&mut piece).await {
            Ok(0) | Err(_) => return,
            Ok(n) => body_left = body_left.saturating_sub(n),
        }
    }
    let head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n";
    if conn.write_all(head).await.is_err() {
        return;
    }
    for i in 0u64.. {
        let event = format!(
            "data: {{\"id\":\"chatcmpl-soak\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"mistral-small-latest\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"t{i} \"}},\"finish_reason\":null}}]}}\n\n"
        );
        let framed = format!("{:x}\r\n{event}\r\n", event.len());
        if conn.write_all(framed.as_bytes()).await.is_err() {
            return;
        }
        sleep(interval).await;
    }
}

/// The `Content-Length` of an HTTP head (0 when absent or unreadable).
fn content_length(head: &[u8]) -> usize {
    String::from_utf8_lossy(head)
        .split("\r\n")
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.trim().eq_ignore_ascii_case("content-length").then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0)
}

// ------------------------------------------------------------------ hostile

struct Hostile {
    port: u16,
    seconds: u64,
    streams: u64,
    idle: u64,
    slow_headers: u64,
    slow_bodies: u64,
}

/// What the hostile clients saw, printed as JSON.
#[derive(Default)]
struct Stats {
    streams_open: AtomicI64,
    stream_bytes: AtomicI64,
    stream_restarts: AtomicI64,
    hostile_connections: AtomicI64,
    hostile_cut: AtomicI64,
    connect_errors: AtomicI64,
}

impl Stats {
    fn add(counter: &AtomicI64, n: i64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn json(&self) -> String {
        let get = |c: &AtomicI64| c.load(Ordering::Relaxed);
        format!(
            "{{\"streams_open\": {}, \"stream_bytes\": {}, \"stream_restarts\": {}, \"hostile_connections\": {}, \"hostile_cut\": {}, \"connect_errors\": {}}}",
            get(&self.streams_open),
            get(&self.stream_bytes),
            get(&self.stream_restarts),
            get(&self.hostile_connections),
            get(&self.hostile_cut),
            get(&self.connect_errors)
        )
    }
}

async fn hostile(plan: Hostile) {
    let stats = Arc::new(Stats::default());
    let deadline = Instant::now() + Duration::from_secs(plan.seconds);
    let port = plan.port;
    let stream_request = Arc::new(format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{STREAM_BODY}",
        STREAM_BODY.len()
    ));
    let slow_header: Arc<Vec<u8>> =
        Arc::new([&b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\nx-slow: "[..], &[b'a'; 200]].concat());
    const SLOW_BODY_HEAD: &[u8] = b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n";
    for _ in 0..plan.streams {
        tokio::spawn(hold_stream(port, deadline, stats.clone(), stream_request.clone()));
    }
    for _ in 0..plan.idle {
        tokio::spawn(hold_slow(port, deadline, stats.clone(), b"", Trickle::Nothing));
    }
    for _ in 0..plan.slow_headers {
        tokio::spawn(hold_slow(port, deadline, stats.clone(), b"", Trickle::Bytes(slow_header.clone())));
    }
    for _ in 0..plan.slow_bodies {
        tokio::spawn(hold_slow(port, deadline, stats.clone(), SLOW_BODY_HEAD, Trickle::Forever(b' ')));
    }
    while Instant::now() < deadline {
        tokio::time::sleep_until((Instant::now() + Duration::from_secs(5)).min(deadline)).await;
        println!("{}", stats.json());
    }
}

async fn connect(port: u16, stats: &Stats) -> Option<TcpStream> {
    match TcpStream::connect(std::net::SocketAddr::from((HOST, port))).await {
        Ok(conn) => Some(conn),
        Err(_) => {
            Stats::add(&stats.connect_errors, 1);
            sleep(Duration::from_millis(500)).await;
            None
        }
    }
}

/// Opens a stream and reads it until the gateway ends it; again.
async fn hold_stream(port: u16, deadline: Instant, stats: Arc<Stats>, request: Arc<String>) {
    let mut buf = vec![0u8; 16 * 1024];
    while Instant::now() < deadline {
        let Some(mut conn) = connect(port, &stats).await else { continue };
        if conn.write_all(request.as_bytes()).await.is_err() {
            Stats::add(&stats.connect_errors, 1);
            continue;
        }
        Stats::add(&stats.streams_open, 1);
        while Instant::now() < deadline {
            match timeout(Duration::from_secs(40), conn.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => Stats::add(&stats.stream_bytes, n as i64),
                _ => break,
            }
        }
        Stats::add(&stats.streams_open, -1);
        Stats::add(&stats.stream_restarts, 1);
    }
}

/// What a slow client sends after its opening bytes: one byte every 5 s.
enum Trickle {
    /// Nothing: the connection sits idle until the gateway closes it.
    Nothing,
    /// These bytes, then the client gives up and reconnects.
    Bytes(Arc<Vec<u8>>),
    /// This byte, again and again.
    Forever(u8),
}

/// Connects, sends `opening` at once, then trickles, until the gateway
/// answers or cuts the connection (or the run ends); again.
async fn hold_slow(port: u16, deadline: Instant, stats: Arc<Stats>, opening: &'static [u8], trickle: Trickle) {
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        let Some(mut conn) = connect(port, &stats).await else { continue };
        Stats::add(&stats.hostile_connections, 1);
        if conn.write_all(opening).await.is_ok() {
            let bytes: Box<dyn Iterator<Item = u8> + Send + '_> = match &trickle {
                Trickle::Nothing => {
                    let _ = tokio::time::timeout_at(deadline, conn.read(&mut buf)).await;
                    Box::new(std::iter::empty())
                }
                Trickle::Bytes(bytes) => Box::new(bytes.iter().copied()),
                Trickle::Forever(byte) => Box::new(std::iter::repeat(*byte)),
            };
            for byte in bytes {
                if Instant::now() >= deadline || conn.write_all(&[byte]).await.is_err() {
                    break;
                }
                // An answer or the close: the gateway cut us.
                if timeout(SLOW_STEP, conn.read(&mut buf)).await.is_ok() {
                    break;
                }
            }
        }
        Stats::add(&stats.hostile_cut, 1);
    }
}
