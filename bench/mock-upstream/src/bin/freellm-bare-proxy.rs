//! The floor of the benchmark: the least a reverse proxy can do.
//!
//! Receives a request, forwards its method, path, `content-type` and body
//! to the upstream over a pooled keep-alive connection and relays the
//! upstream's status, `content-type` and body back, frame by frame as they
//! come (a stream is relayed as it is produced, not after its end). No parsing, no routing,
//! no WebAssembly: the same two HTTP exchanges (client ↔ proxy ↔ upstream)
//! the gateway makes, on the same hyper stack, with nothing else. The
//! benchmark measures it next to the gateway so that the gateway's own cost
//! can be told apart from what forwarding costs on the machine at all.
//!
//! ```text
//! freellm-bare-proxy --port N --upstream http://127.0.0.1:PORT [--work-us W] [--frame-work-us F]
//! ```
//!
//! `--work-us W` spins for W µs of the worker's time on every request
//! before forwarding it, `--frame-work-us F` for F µs on every data frame
//! of an answer it relays: the floor plus a known amount of work, with
//! which `bench/budget.sh` measures how much work a proxy can add on this
//! machine and still reach a given share of the floor.
//!
//! Runs a tokio worker per core, like the gateway. Prints `listening on
//! HOST:PORT` once the socket is bound.

use std::convert::Infallible;
use std::io::Write;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Either, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::CONTENT_TYPE;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

type Upstream = Client<HttpConnector, Full<Bytes>>;

fn main() {
    let (port, upstream, work) = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("freellm-bare-proxy: {e}");
            eprintln!(
                "usage: freellm-bare-proxy --port N --upstream http://HOST:PORT [--work-us W] [--frame-work-us F]"
            );
            std::process::exit(2);
        }
    };
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_io().build().expect("cannot build the tokio runtime");
    if let Err(e) = runtime.block_on(serve(port, upstream, work)) {
        eprintln!("freellm-bare-proxy: {e}");
        std::process::exit(1);
    }
}

/// Busy work added to the floor's own: per request, and per relayed data frame.
#[derive(Clone, Copy, Default)]
struct Work {
    request: Duration,
    frame: Duration,
}

async fn serve(port: u16, upstream: String, work: Work) -> std::io::Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {}", listener.local_addr()?)?;
        out.flush()?;
    }
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Upstream = Client::builder(TokioExecutor::new()).build(connector);
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        let (client, upstream) = (client.clone(), upstream.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let (client, upstream) = (client.clone(), upstream.clone());
                async move {
                    spin(work.request);
                    Ok::<_, Infallible>(forward(&client, &upstream, req, work.frame).await)
                }
            });
            let _ = http1::Builder::new().keep_alive(true).serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

/// Keeps the thread busy for `work` (nothing when zero).
fn spin(work: Duration) {
    if work.is_zero() {
        return;
    }
    let until = Instant::now() + work;
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}

/// The upstream's body, relayed as it comes, or an empty error answer.
type Relayed = Either<Worked, Full<Bytes>>;

/// The upstream's body with `work` spent on each data frame it yields.
struct Worked {
    inner: Incoming,
    work: Duration,
}

impl Body for Worked {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if matches!(&frame, Some(Ok(f)) if f.is_data()) {
            spin(self.work);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

async fn forward(client: &Upstream, upstream: &str, req: Request<Incoming>, frame_work: Duration) -> Response<Relayed> {
    let (parts, body) = req.into_parts();
    let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else { return status(StatusCode::BAD_REQUEST) };
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let Ok(uri) = format!("{upstream}{path}").parse::<Uri>() else { return status(StatusCode::BAD_REQUEST) };
    let mut out = Request::builder().method(parts.method).uri(uri);
    if let Some(ct) = parts.headers.get(CONTENT_TYPE) {
        out = out.header(CONTENT_TYPE, ct);
    }
    let Ok(out) = out.body(Full::new(body)) else { return status(StatusCode::BAD_REQUEST) };
    let Ok(resp) = client.request(out).await else { return status(StatusCode::BAD_GATEWAY) };
    let (parts, body) = resp.into_parts();
    let mut resp = Response::new(Either::Left(Worked { inner: body, work: frame_work }));
    *resp.status_mut() = parts.status;
    if let Some(ct) = parts.headers.get(CONTENT_TYPE) {
        resp.headers_mut().insert(CONTENT_TYPE, ct.clone());
    }
    resp
}

fn status(code: StatusCode) -> Response<Relayed> {
    let mut resp = Response::new(Either::Right(Full::new(Bytes::new())));
    *resp.status_mut() = code;
    resp
}

fn parse_args() -> Result<(u16, String, Work), String> {
    let (mut port, mut upstream, mut work) = (None, None, Work::default());
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--port" => port = Some(value.parse::<u16>().map_err(|_| format!("bad port {value:?}"))?),
            "--upstream" => upstream = Some(value.trim_end_matches('/').to_owned()),
            "--work-us" | "--frame-work-us" => {
                let us = value.parse::<u64>().map_err(|_| format!("bad {flag} {value:?}"))?;
                let slot = if flag == "--work-us" { &mut work.request } else { &mut work.frame };
                *slot = Duration::from_micros(us);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    match (port, upstream) {
        (Some(p), Some(u)) if u.starts_with("http://") => Ok((p, u, work)),
        (Some(_), Some(u)) => Err(format!("--upstream must be an http:// URL, not {u:?}")),
        _ => Err("--port and --upstream are required".to_owned()),
    }
}
