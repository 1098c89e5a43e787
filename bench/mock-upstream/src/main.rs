//! A minimal, fast mock of an OpenAI-compatible upstream, for the benchmark.
//!
//! `POST .../chat/completions` answers a fixed `chat.completion` (or, when the
//! body asks for `"stream":true`, a fixed SSE stream) without parsing the
//! request: the benchmark measures the gateway, so the upstream must cost as
//! close to nothing as possible and cost the same for every request.
//! Anything else answers 404.
//!
//! ```text
//! freellm-mock-upstream [--port N] [--host ADDR] [--threads N] [--rate-limit-every N]
//!                       [--stream-chunks N] [--chunk-interval-ms MS]
//! ```
//!
//! Each flag has an environment fallback: `PORT`, `MOCK_HOST`, `MOCK_THREADS`,
//! `MOCK_RATE_LIMIT_EVERY`, `MOCK_STREAM_CHUNKS`, `MOCK_CHUNK_INTERVAL_MS`.
//! `--threads` (default 1) is the number of tokio worker threads: keep it
//! small so the mock does not steal cores from the gateway it is serving.
//! `--rate-limit-every N` makes every Nth chat request answer 429 with
//! `retry-after: 1` (0 = never). `--stream-chunks N` (default 3) is the
//! number of chunks of a streamed answer, the last one carrying
//! `finish_reason` and `usage`, then `[DONE]`; `--chunk-interval-ms MS`
//! (default 0) paces them, one chunk every MS milliseconds (a slow stream).
//! Prints `listening on HOST:PORT` once the socket is bound.

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// A fixed, small (~300 bytes) non-streaming answer.
const COMPLETION: &str = concat!(
    r#"{"id":"chatcmpl-mock","object":"chat.completion","created":1700000000,"#,
    r#""model":"llama-3.3-70b-versatile","choices":[{"index":0,"message":"#,
    r#"{"role":"assistant","content":"Hello! How can I help you today?"},"#,
    r#""logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"#,
    r#""completion_tokens":9,"total_tokens":21},"system_fingerprint":"fp_mock"}"#,
);

/// The events of a streamed answer (a Groq-shaped chunk each, ~200 bytes).
const FIRST_CHUNK: &str = concat!(
    r#"data: {"id":"chatcmpl-mock","object":"chat.completion.chunk","created":1700000000,"model":"llama-3.3-70b-versatile","choices":[{"index":0,"delta":{"role":"assistant","content":"Hello"},"finish_reason":null}]}"#,
    "\n\n",
);
const MIDDLE_CHUNK: &str = concat!(
    r#"data: {"id":"chatcmpl-mock","object":"chat.completion.chunk","created":1700000000,"model":"llama-3.3-70b-versatile","choices":[{"index":0,"delta":{"content":" there!"},"finish_reason":null}]}"#,
    "\n\n",
);
const LAST_CHUNK: &str = concat!(
    r#"data: {"id":"chatcmpl-mock","object":"chat.completion.chunk","created":1700000000,"model":"llama-3.3-70b-versatile","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":2,"total_tokens":14}}"#,
    "\n\n",
);
const DONE: &str = "data: [DONE]\n\n";

const RATE_LIMITED: &str =
    r#"{"error":{"message":"Rate limit reached (mock)","type":"requests","code":"rate_limit_exceeded"}}"#;
const NOT_FOUND: &str =
    r#"{"error":{"message":"Unknown path (mock upstream)","type":"invalid_request_error","code":"not_found"}}"#;

struct Options {
    host: String,
    port: u16,
    threads: usize,
    rate_limit_every: u64,
    stream_chunks: usize,
    chunk_interval: Duration,
}

struct Mock {
    rate_limit_every: u64,
    /// The streamed answer's frames: one per chunk, `[DONE]` with the last.
    stream: Arc<[Bytes]>,
    /// Pause before each frame after the first (zero: all at once).
    chunk_interval: Duration,
    /// Chat requests seen so far; drives `--rate-limit-every`.
    chat_requests: AtomicU64,
    /// Chat requests answered with a 429.
    rate_limited: AtomicU64,
}

fn main() {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("freellm-mock-upstream: {e}");
            eprintln!(
                "usage: freellm-mock-upstream [--port N] [--host ADDR] [--threads N] [--rate-limit-every N] \
                 [--stream-chunks N] [--chunk-interval-ms MS]"
            );
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(opts.threads)
        .enable_io()
        .enable_time()
        .build()
        .expect("cannot build the tokio runtime");
    if let Err(e) = runtime.block_on(serve(opts)) {
        eprintln!("freellm-mock-upstream: {e}");
        std::process::exit(1);
    }
}

async fn serve(opts: Options) -> std::io::Result<()> {
    let listener = TcpListener::bind((opts.host.as_str(), opts.port)).await?;
    let addr: SocketAddr = listener.local_addr()?;
    {
        // Scripts wait for this line: flush it at once even when stdout is a pipe.
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {addr}")?;
        out.flush()?;
    }
    let mock = Arc::new(Mock {
        rate_limit_every: opts.rate_limit_every,
        stream: stream_frames(opts.stream_chunks).into(),
        chunk_interval: opts.chunk_interval,
        chat_requests: AtomicU64::new(0),
        rate_limited: AtomicU64::new(0),
    });
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            // e.g. EMFILE under a connection storm: keep serving the others.
            Err(_) => continue,
        };
        let _ = stream.set_nodelay(true);
        let mock = mock.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let mock = mock.clone();
                async move { Ok::<_, Infallible>(mock.handle(req).await) }
            });
            // Connection errors (client hung up mid-request) are not interesting here.
            let _ = http1::Builder::new().keep_alive(true).serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

impl Mock {
    async fn handle(&self, req: Request<Incoming>) -> Response<Answer> {
        if req.method() == Method::GET && req.uri().path() == "/stats" {
            // Counters for the routing benchmark: how many chat requests this
            // upstream saw, and how many it refused with a 429.
            let stats = format!(
                "{{\"chat_requests\":{},\"rate_limited\":{}}}",
                self.chat_requests.load(Ordering::Relaxed),
                self.rate_limited.load(Ordering::Relaxed)
            );
            let mut resp = Response::new(Answer::whole(Bytes::from(stats)));
            resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            return resp;
        }
        let is_chat = req.method() == Method::POST && req.uri().path().ends_with("/chat/completions");
        // Read the whole body even when it is not used, so the connection stays
        // reusable and the client never sees a reset.
        let body = match req.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => Bytes::new(),
        };
        if !is_chat {
            return respond(StatusCode::NOT_FOUND, "application/json", NOT_FOUND);
        }
        let n = self.chat_requests.fetch_add(1, Ordering::Relaxed) + 1;
        if self.rate_limit_every > 0 && n.is_multiple_of(self.rate_limit_every) {
            self.rate_limited.fetch_add(1, Ordering::Relaxed);
            let mut resp = respond(StatusCode::TOO_MANY_REQUESTS, "application/json", RATE_LIMITED);
            resp.headers_mut().insert("retry-after", HeaderValue::from_static("1"));
            return resp;
        }
        if wants_stream(&body) {
            let mut resp = Response::new(Answer::paced(self.stream.clone(), self.chunk_interval));
            resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
            resp.headers_mut().insert("cache-control", HeaderValue::from_static("no-cache"));
            resp
        } else {
            respond(StatusCode::OK, "application/json", COMPLETION)
        }
    }
}

fn respond(status: StatusCode, content_type: &'static str, body: &'static str) -> Response<Answer> {
    let mut resp = Response::new(Answer::whole(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// The frames of a streamed answer of `chunks` chunks (at least one): the
/// first opens the assistant message, the last carries `finish_reason` and
/// `usage` and is followed by `[DONE]` in the same frame.
fn stream_frames(chunks: usize) -> Vec<Bytes> {
    let mut frames = Vec::with_capacity(chunks.max(1));
    if chunks > 1 {
        frames.push(Bytes::from_static(FIRST_CHUNK.as_bytes()));
        frames.extend(std::iter::repeat_n(Bytes::from_static(MIDDLE_CHUNK.as_bytes()), chunks - 2));
    }
    frames.push(Bytes::from([LAST_CHUNK, DONE].concat()));
    frames
}

/// A response body: frames sent one after the other, with an optional pause
/// before each frame after the first.
struct Answer {
    frames: Arc<[Bytes]>,
    next: usize,
    interval: Duration,
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Answer {
    fn whole(body: Bytes) -> Answer {
        Answer::paced(Arc::from([body]), Duration::ZERO)
    }

    fn paced(frames: Arc<[Bytes]>, interval: Duration) -> Answer {
        Answer { frames, next: 0, interval, pause: None }
    }
}

impl hyper::body::Body for Answer {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        let Some(frame) = this.frames.get(this.next).cloned() else { return Poll::Ready(None) };
        if this.next > 0 && !this.interval.is_zero() {
            let pause = this.pause.get_or_insert_with(|| Box::pin(tokio::time::sleep(this.interval)));
            if pause.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            this.pause = None;
        }
        this.next += 1;
        Poll::Ready(Some(Ok(Frame::data(frame))))
    }

    fn is_end_stream(&self) -> bool {
        self.next >= self.frames.len()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        if self.frames.len() == 1 {
            hyper::body::SizeHint::with_exact(self.frames[0].len() as u64)
        } else {
            hyper::body::SizeHint::default()
        }
    }
}

/// True when the body contains `"stream"`, optional whitespace, `:`, optional
/// whitespace, `true` — a byte scan, not a JSON parse, on purpose (cheap, and
/// good enough for a mock: a `"stream":true` inside a message string would
/// also match).
fn wants_stream(body: &[u8]) -> bool {
    const KEY: &[u8] = b"\"stream\"";
    let mut rest = body;
    while let Some(i) = find(rest, KEY) {
        rest = &rest[i + KEY.len()..];
        let after = skip_ws(rest);
        if let Some(after_colon) = after.strip_prefix(b":")
            && skip_ws(after_colon).starts_with(b"true")
        {
            return true;
        }
    }
    false
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn skip_ws(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|b| b.is_ascii_whitespace()).count();
    &s[n..]
}

fn parse_args() -> Result<Options, String> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let mut host = env("MOCK_HOST").unwrap_or_else(|| "127.0.0.1".to_owned());
    let mut port = env("PORT").unwrap_or_else(|| "8081".to_owned());
    let mut threads = env("MOCK_THREADS").unwrap_or_else(|| "1".to_owned());
    let mut rate_limit_every = env("MOCK_RATE_LIMIT_EVERY").unwrap_or_else(|| "0".to_owned());
    let mut stream_chunks = env("MOCK_STREAM_CHUNKS").unwrap_or_else(|| "3".to_owned());
    let mut chunk_interval_ms = env("MOCK_CHUNK_INTERVAL_MS").unwrap_or_else(|| "0".to_owned());

    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        // Accept both `--flag value` and `--flag=value`.
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let slot = match flag.as_str() {
            "--host" => &mut host,
            "--port" | "-p" => &mut port,
            "--threads" => &mut threads,
            "--rate-limit-every" => &mut rate_limit_every,
            "--stream-chunks" => &mut stream_chunks,
            "--chunk-interval-ms" => &mut chunk_interval_ms,
            "--help" | "-h" => return Err("help requested".to_owned()),
            other => return Err(format!("unknown argument {other:?}")),
        };
        *slot = match inline {
            Some(v) => v,
            None => args.next().ok_or_else(|| format!("{flag} needs a value"))?,
        };
    }

    let port: u16 = port.parse().map_err(|_| format!("bad port {port:?}"))?;
    let threads: usize = threads.parse().map_err(|_| format!("bad thread count {threads:?}"))?;
    if threads == 0 {
        return Err("--threads must be at least 1".to_owned());
    }
    let rate_limit_every: u64 =
        rate_limit_every.parse().map_err(|_| format!("bad --rate-limit-every {rate_limit_every:?}"))?;
    let stream_chunks: usize = stream_chunks.parse().map_err(|_| format!("bad --stream-chunks {stream_chunks:?}"))?;
    if stream_chunks == 0 {
        return Err("--stream-chunks must be at least 1".to_owned());
    }
    let chunk_interval_ms: u64 =
        chunk_interval_ms.parse().map_err(|_| format!("bad --chunk-interval-ms {chunk_interval_ms:?}"))?;
    Ok(Options {
        host,
        port,
        threads,
        rate_limit_every,
        stream_chunks,
        chunk_interval: Duration::from_millis(chunk_interval_ms),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_stream_flag() {
        assert!(wants_stream(br#"{"model":"m","stream":true}"#));
        assert!(wants_stream(br#"{"stream" : true,"model":"m"}"#));
        assert!(!wants_stream(br#"{"model":"m","stream":false}"#));
        assert!(!wants_stream(br#"{"model":"m"}"#));
        assert!(!wants_stream(b""));
    }

    #[test]
    fn fixed_bodies_are_small() {
        assert!(COMPLETION.len() < 400, "{}", COMPLETION.len());
    }

    #[test]
    fn streams_have_the_asked_number_of_chunks() {
        for chunks in [1, 2, 3, 500] {
            let frames = stream_frames(chunks);
            assert_eq!(frames.len(), chunks);
            let text: Vec<u8> = frames.iter().flat_map(|f| f.iter().copied()).collect();
            let text = String::from_utf8(text).unwrap();
            assert_eq!(text.matches("chat.completion.chunk").count(), chunks);
            assert_eq!(text.matches("\"finish_reason\":\"stop\"").count(), 1);
            assert!(text.ends_with("data: [DONE]\n\n"));
        }
    }
}
