//! The HTTP server: routes, the middleware stack and graceful shutdown.
//!
//! Every route is served at `/` and again under `/api` (as the reference
//! gateway does). In front of the routes, one middleware ([`edge`]) runs,
//! in order: the request id (assigns or echoes `X-Request-Id` and renders
//! every error body with it), the `Host` check ([`guard::check_host`]),
//! CORS ([`crate::http::cors`], answers preflights
//! before authentication), the guard ([`crate::http::guard`]: authentication,
//! admin-only endpoints, per-IP and per-identifier limits).
//! [`App::handle`] is where a request goes in: the chat route straight to
//! its handler (inside the same edge), every other route through axum's
//! router.
//!
//! The serving loop is our own (axum's `serve` has no timeouts or limits):
//! every connection takes a slot of a fixed number (past it: one short 503
//! and the connection is closed), a request head must arrive within the
//! header-read timeout, a connection without a request in progress is
//! closed after the idle timeout, one whose client stops taking the answer
//! after the write-stall timeout, and every request body is read through a
//! guard that enforces the route's size limit and the body-read deadline
//! (413 and 408 in the error envelope, chunked bodies included). On SIGTERM
//! the gateway stops accepting, lets in-flight requests finish within the
//! shutdown grace, then ends open streams with a `shutdown` error event,
//! persists its counters and exits.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tower::ServiceExt;

use crate::http::api;
use crate::http::cors::Cors;
use crate::http::error::{ApiError, PendingErrorBody, render_error_body};
use crate::http::guard;
use crate::state::{Gateway, SharedGateway};

/// The request's id, available to handlers as an extension.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

impl RequestId {
    /// A new random id.
    pub fn fresh() -> Self {
        Self(uuid::Uuid::new_v4().to_string())
    }
}

/// The gateway's HTTP application: every request goes in through
/// [`App::handle`].
#[derive(Clone)]
pub struct App {
    gw: SharedGateway,
    router: Router,
}

impl App {
    /// Serves one request. `POST /v1/chat/completions` (at `/` or under
    /// `/api`), the route every model call takes, goes straight to its
    /// handler inside the same [`edge`] as every route: the router's
    /// matching, boxed service clones and extractors would cost each call
    /// about 30 allocations. Everything else goes through the router.
    pub async fn handle(&self, req: Request) -> Response {
        if is_chat(&req) {
            let gw = self.gw.clone();
            return around(&self.gw, req, async move |req| api::chat::handle(gw, req).await).await;
        }
        match self.router.clone().oneshot(req).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }
}

/// The chat route: `POST` to `/v1/chat/completions` or
/// `/api/v1/chat/completions`.
fn is_chat(req: &Request) -> bool {
    const CHAT: &str = "/v1/chat/completions";
    let path = req.uri().path();
    req.method() == Method::POST && (path == CHAT || path.strip_prefix("/api") == Some(CHAT))
}

/// Builds the application.
pub fn app(gw: SharedGateway) -> App {
    App { router: router(gw.clone()), gw }
}

/// The router of every route.
fn router(gw: SharedGateway) -> Router {
    let routes = Router::new()
        .route("/healthz", get(api::health::healthz))
        .route("/v1/chat/completions", post(api::chat::chat_completions))
        .route("/v1/models", get(api::models::list_models))
        .route("/v1/status", get(api::status::status))
        .route("/v1/status/routing", patch(api::status::set_routing))
        .route("/v1/status/providers/{id}/reset", post(api::status::reset_provider))
        .route("/v1/status/virtual-keys", get(api::status::virtual_keys))
        .route("/v1/tokens/issue", post(api::tokens::issue))
        .route("/v1/me", get(api::me::me))
        .route("/v1/events", get(api::events::events))
        .route("/metrics", get(api::metrics::metrics))
        .route("/v1/plugins", get(api::plugins::list))
        .route("/v1/plugins/reload", post(api::plugins::reload))
        .route("/v1/plugins/{id}", post(api::plugins::upload))
        .route("/v1/plugins/{id}/canary", post(api::plugins::set_canary))
        .route("/v1/plugins/{id}/reload", post(api::plugins::reload_one));
    Router::new()
        .merge(routes.clone())
        .nest("/api", routes)
        // The dashboard's shell is public (see `guard`): only at /dashboard.
        .route("/dashboard", get(api::dashboard::index))
        .route("/dashboard/", get(api::dashboard::index))
        .route("/dashboard/session", get(api::dashboard::session))
        .route("/dashboard/{*file}", get(api::dashboard::asset))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // The chat handler enforces the configured limit itself (413 with our envelope).
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::from_fn_with_state(gw.clone(), edge))
        .with_state(gw)
}

async fn not_found(req: Request) -> ApiError {
    ApiError::NotFound { path: req.uri().path().to_owned() }
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// True for ids the gateway echoes: `^[A-Za-z0-9_.:-]{1,128}$`.
fn is_valid_request_id(id: &[u8]) -> bool {
    (1..=128).contains(&id.len()) && id.iter().all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(b))
}

/// The stack in front of every route, in one middleware (each layer of its
/// own would cost the request path a boxed future and a service clone):
/// the request id, CORS, then the guard; on the way back the guard's and
/// CORS's headers, then the request id, which also renders parked error
/// bodies.
async fn edge(State(gw): State<SharedGateway>, req: Request, next: Next) -> Response {
    around(&gw, req, async |req| next.run(req).await).await
}

/// What [`edge`] does around `inner`, the route's handler.
async fn around(gw: &SharedGateway, mut req: Request, inner: impl AsyncFnOnce(Request) -> Response) -> Response {
    let id = assign_request_id(&mut req);
    if let Err(refusal) = guard::check_host(gw, &req) {
        return finish_request_id(*refusal, id);
    }
    let clients = gw.live.load().clients.clone();
    let mut response = match Cors::check(&clients.origins, &req) {
        Err(preflight) => *preflight,
        Ok(cors) => {
            let mut response = match guard::admit(gw, &clients, &mut req).await {
                Err(refusal) => *refusal,
                Ok(admission) => {
                    let mut response = run_with_body_guard(gw, req, inner).await;
                    admission.finish(&mut response).await;
                    response
                }
            };
            cors.decorate(&mut response);
            response
        }
    };
    // Which instance of a fleet answered (a shared value: no allocation).
    const INSTANCE: HeaderName = HeaderName::from_static("x-freellm-instance");
    response.headers_mut().insert(INSTANCE, gw.instance_header.clone());
    finish_request_id(response, id)
}

/// Echoes a valid inbound `X-Request-Id` or makes one; handlers read it as
/// the [`RequestId`] extension.
fn assign_request_id(req: &mut Request) -> String {
    let id = match req.headers().get("x-request-id") {
        Some(v) if is_valid_request_id(v.as_bytes()) => String::from_utf8_lossy(v.as_bytes()).into_owned(),
        _ => RequestId::fresh().0,
    };
    req.extensions_mut().insert(RequestId(id.clone()));
    id
}

/// Renders a parked error body with the request id, and sets the header
/// (the id's own bytes: a valid id is a valid header value).
fn finish_request_id(mut response: Response, id: String) -> Response {
    if let Some(PendingErrorBody(body)) = response.extensions_mut().remove::<PendingErrorBody>() {
        let status = response.status();
        let mut headers = std::mem::take(response.headers_mut());
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        response = (status, render_error_body(body, &id)).into_response();
        response.headers_mut().extend(headers);
    } else if response.status() == StatusCode::PAYLOAD_TOO_LARGE {
        tracing::debug!("payload too large from a layer");
    }
    const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
    if let Ok(v) = HeaderValue::from_maybe_shared(Bytes::from(id)) {
        response.headers_mut().insert(REQUEST_ID, v);
    }
    response
}

/// Over-limit connections answered with a 503 at the same time; past this
/// they are closed without an answer (each refusal holds a descriptor).
const REFUSAL_SLOTS: usize = 64;
/// The longest a refused connection is kept to deliver its 503.
const REFUSAL_DEADLINE: Duration = Duration::from_secs(1);
/// After the grace, how long the ended streams get to reach their clients.
const FLUSH_AFTER_CUTOFF: Duration = Duration::from_secs(1);
/// Bounds of the pause after a failed `accept` (e.g. out of descriptors).
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Serves until SIGINT/SIGTERM, then drains in-flight requests up to the
/// shutdown grace.
pub async fn serve(gw: SharedGateway) -> anyhow::Result<()> {
    let addr = SocketAddr::new(gw.config.host, gw.config.port);
    let listener =
        tokio::net::TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    tracing::info!(address = %listener.local_addr()?, "FreeLLM gateway listening");
    let edge = gw.config.edge;
    let app = app(gw.clone());
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(edge.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let builders = Arc::new(Builders {
        http1: builder.clone().http1_only(),
        http2: builder.clone().http2_only(),
        either: builder,
    });
    // The semaphore's capacity bounds `acquire_many` below.
    let capacity = edge.max_connections.min(u32::MAX as usize);
    let slots = Arc::new(Semaphore::new(capacity));
    let refusals = Arc::new(Semaphore::new(REFUSAL_SLOTS));
    let (closing, _) = watch::channel(false);
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let mut backoff: Option<Duration> = None;
    loop {
        let accepted = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, remote) = match accepted {
            Ok(a) => {
                backoff = None;
                a
            }
            Err(e) if is_per_connection_error(&e) => continue,
            Err(e) => {
                // Out of descriptors or memory: retrying at once would spin;
                // the open connections' timeouts free descriptors meanwhile.
                let wait = accept_backoff(backoff);
                backoff = Some(wait);
                tracing::warn!(error = %e, wait_ms = wait.as_millis() as u64, "cannot accept a connection; pausing");
                tokio::time::sleep(wait).await;
                continue;
            }
        };
        tune_connection(&tcp);
        match slots.clone().try_acquire_owned() {
            Ok(slot) => {
                let conn = ConnectionTask {
                    builders: builders.clone(),
                    app: app.clone(),
                    remote,
                    idle_timeout: edge.idle_timeout,
                    write_stall_timeout: edge.write_stall_timeout,
                    closing: closing.subscribe(),
                };
                tokio::spawn(async move {
                    conn.run(tcp).await;
                    drop(slot);
                });
            }
            Err(_) => refuse(tcp, &refusals),
        }
    }
    drop(listener);
    // Open event feeds would keep the drain waiting for the whole grace.
    gw.events.close();
    closing.send_replace(true);
    let everyone = capacity as u32;
    let drained = tokio::time::timeout(edge.shutdown_grace, slots.acquire_many(everyone)).await.is_ok();
    if !drained {
        tracing::warn!(
            grace_ms = edge.shutdown_grace.as_millis() as u64,
            "shutdown grace passed with requests in flight; ending open streams"
        );
        gw.drain.cut_streams();
        let _ = tokio::time::timeout(FLUSH_AFTER_CUTOFF, slots.acquire_many(everyone)).await;
    }
    // Corrections of the fleet's counts still waiting for their write.
    gw.fleet.flush_settlements().await;
    gw.persist_now();
    tracing::info!("gateway stopped");
    Ok(())
}

/// Errors of `accept` that concern one connection (the client gave up
/// before it was accepted), not the listener: retry at once.
fn is_per_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset, Interrupted};
    matches!(e.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset | Interrupted)
}

/// The pause after a failed `accept`: doubling from 5 ms up to 1 s.
fn accept_backoff(previous: Option<Duration>) -> Duration {
    previous.map_or(ACCEPT_BACKOFF_MIN, |p| (p * 2).clamp(ACCEPT_BACKOFF_MIN, ACCEPT_BACKOFF_MAX))
}

/// Answers a connection past the limit with one short 503 (in the error
/// envelope, `Connection: close`), within [`REFUSAL_DEADLINE`]; when even
/// the refusals are at their limit, closes it at once.
fn refuse(tcp: tokio::net::TcpStream, refusals: &Arc<Semaphore>) {
    let Ok(permit) = refusals.clone().try_acquire_owned() else {
        tracing::debug!("connection limit reached; closing a connection without an answer");
        return;
    };
    tracing::debug!("connection limit reached; refusing a connection with 503");
    tokio::spawn(async move {
        let _permit = permit;
        let service = hyper::service::service_fn(|_req: hyper::Request<hyper::body::Incoming>| async {
            let mut response = ApiError::TooManyConnections.into_response();
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            Ok::<_, Infallible>(finish_request_id(response, RequestId::fresh().0))
        });
        let mut http1 = hyper::server::conn::http1::Builder::new();
        http1.keep_alive(false).timer(TokioTimer::new()).header_read_timeout(REFUSAL_DEADLINE);
        let _ = tokio::time::timeout(REFUSAL_DEADLINE, http1.serve_connection(TokioIo::new(tcp), service)).await;
    });
}

/// The connection builders (the same settings), one per way a client
/// opens a connection.
struct Builders {
    http1: AutoBuilder,
    http2: AutoBuilder,
    /// Reads the first bytes itself to tell (see [`Opening::Unsure`]).
    either: AutoBuilder,
}

type AutoBuilder = hyper_util::server::conn::auto::Builder<TokioExecutor>;

/// What a connection's first bytes say about its protocol, read with
/// `peek` (nothing consumed). hyper's own detection reads them and hands
/// them back to the HTTP/1 reader, whose buffer then grows to 16 KiB for
/// the connection's whole life, where a reader starting on the untouched
/// socket keeps 8 KiB: ~8 KiB less per open stream.
#[derive(Debug, PartialEq, Eq)]
enum Opening {
    /// Not the HTTP/2 preface: HTTP/1.
    Http1,
    /// The whole HTTP/2 preface (prior knowledge).
    Http2,
    /// Too few bytes to tell (a preface still arriving, or none at all):
    /// hyper reads and decides.
    Unsure,
}

/// The HTTP/2 client preface.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

impl Opening {
    fn of(peeked: &[u8]) -> Self {
        let n = peeked.len().min(H2_PREFACE.len());
        if n == 0 {
            Self::Unsure
        } else if peeked[..n] != H2_PREFACE[..n] {
            Self::Http1
        } else if n == H2_PREFACE.len() {
            Self::Http2
        } else {
            Self::Unsure
        }
    }

    /// Waits for the first bytes and classifies them.
    async fn peek(tcp: &tokio::net::TcpStream) -> Self {
        let mut buf = [0u8; H2_PREFACE.len()];
        match tcp.peek(&mut buf).await {
            Ok(n) => Self::of(&buf[..n]),
            Err(_) => Self::Unsure,
        }
    }
}

/// One accepted connection and what it needs to be served.
struct ConnectionTask {
    builders: Arc<Builders>,
    app: App,
    remote: SocketAddr,
    idle_timeout: Duration,
    write_stall_timeout: Duration,
    closing: watch::Receiver<bool>,
}

impl ConnectionTask {
    async fn run(mut self, tcp: tokio::net::TcpStream) {
        let activity = Arc::new(Activity::new());
        let (app, remote, tracker) = (self.app, self.remote, activity.clone());
        // The request's future is boxed: hyper's HTTP/1 connection keeps a
        // slot of the service future's size for its whole life, and a
        // connection holding an open stream would keep ~0.6 KiB for a
        // future long finished. Boxed, the slot is a pointer and the future
        // is freed once the response is made.
        let service = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            let busy = tracker.begin();
            req.extensions_mut().insert(ConnectInfo(remote));
            let app = app.clone();
            let handled: Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>> = Box::pin(async move {
                let response = app.handle(req.map(Body::new)).await;
                drop(busy);
                Ok(response)
            });
            handled
        });
        // The first bytes choose the protocol; a connection that sends
        // none within the idle timeout (no request in progress) is closed,
        // as hyper would close it.
        let opening = tokio::select! {
            opening = tokio::time::timeout(self.idle_timeout, Opening::peek(&tcp)) => match opening {
                Ok(opening) => opening,
                Err(_) => return,
            },
            _ = self.closing.wait_for(|c| *c) => return,
        };
        let builder = match opening {
            Opening::Http1 => &self.builders.http1,
            Opening::Http2 => &self.builders.http2,
            Opening::Unsure => &self.builders.either,
        };
        // A client that stops taking the answer (a write waiting past the
        // stall timeout) loses its connection, and what it held with it.
        let mut io = tokio_io_timeout::TimeoutStream::new(tcp);
        io.set_write_timeout(Some(self.write_stall_timeout));
        let conn = builder.serve_connection(TokioIo::new(Box::pin(io)), service);
        tokio::pin!(conn);
        let mut winding_down = false;
        loop {
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "client connection ended with an error");
                    }
                    return;
                }
                () = activity.idle(self.idle_timeout), if !winding_down => {
                    // No request in progress: HTTP/1 closes now, HTTP/2 says GOAWAY.
                    conn.as_mut().graceful_shutdown();
                    winding_down = true;
                }
                _ = self.closing.wait_for(|c| *c), if !winding_down => {
                    conn.as_mut().graceful_shutdown();
                    winding_down = true;
                }
            }
        }
    }
}

/// Requests in progress on one connection, and when the last one ended.
struct Activity {
    opened: Instant,
    active: AtomicUsize,
    /// Milliseconds after `opened` of the last request's start or end.
    last_ms: AtomicU64,
}

/// Marks a request in progress until dropped.
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Activity {
    fn new() -> Self {
        Self { opened: Instant::now(), active: AtomicUsize::new(0), last_ms: AtomicU64::new(0) }
    }

    fn begin(self: &Arc<Self>) -> Busy {
        self.active.fetch_add(1, Ordering::AcqRel);
        self.touch();
        Busy(self.clone())
    }

    fn touch(&self) {
        self.last_ms.store(self.opened.elapsed().as_millis() as u64, Ordering::Release);
    }

    /// Resolves once the connection has had no request in progress for `idle`.
    async fn idle(&self, idle: Duration) {
        loop {
            let last = self.opened + Duration::from_millis(self.last_ms.load(Ordering::Acquire));
            match idle_wake(self.active.load(Ordering::Acquire), last, idle, Instant::now()) {
                None => return,
                Some(at) => tokio::time::sleep_until(at).await,
            }
        }
    }
}

/// When to look again at a connection's idleness, or `None` when it has
/// been idle for `idle` at `now`. A request in progress (an upstream may
/// take long before its first byte) is never idle.
fn idle_wake(active: usize, last: Instant, idle: Duration, now: Instant) -> Option<Instant> {
    if active > 0 {
        return Some(now + idle);
    }
    let due = last + idle;
    if now >= due { None } else { Some(due) }
}

/// The body limit of a route: `None` for chat (its handler enforces
/// `FREELLM_MAX_BODY_BYTES` itself), the upload limit for an adapter upload,
/// the control limit for every other endpoint.
fn body_limit(method: &Method, path: &str, edge: &crate::config::EdgeConfig) -> Option<usize> {
    let path = path.strip_prefix("/api").filter(|p| p.starts_with('/')).unwrap_or(path);
    if path == "/v1/chat/completions" {
        return None;
    }
    let is_upload = method == Method::POST
        && path.strip_prefix("/v1/plugins/").is_some_and(|id| !id.is_empty() && !id.contains('/') && id != "reload");
    Some(if is_upload { edge.max_upload_bytes } else { edge.max_control_body_bytes })
}

const TRIPPED_NONE: u8 = 0;
const TRIPPED_TOO_LARGE: u8 = 1;
const TRIPPED_TIMEOUT: u8 = 2;

/// Runs the handler with its body read through a [`GuardedBody`]; when the
/// guard cut the body, the answer is the guard's 413 or 408 whatever the
/// handler made of the read error (axum's own rejections are plain text).
async fn run_with_body_guard(gw: &Gateway, req: Request, inner: impl AsyncFnOnce(Request) -> Response) -> Response {
    let edge = &gw.config.edge;
    let limit = body_limit(req.method(), req.uri().path(), edge);
    if let Some(limit) = limit {
        let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|len| len > limit as u64) {
            return closing(ApiError::PayloadTooLarge { limit });
        }
    }
    if req.body().is_end_stream() {
        return inner(req).await;
    }
    let tripped = Arc::new(AtomicU8::new(TRIPPED_NONE));
    let guard = tripped.clone();
    let timeout = edge.body_read_timeout;
    let req = req.map(|inner| {
        Body::new(GuardedBody {
            inner,
            limit,
            seen: 0,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            tripped: guard,
        })
    });
    let response = inner(req).await;
    match tripped.load(Ordering::Acquire) {
        TRIPPED_TOO_LARGE => closing(ApiError::PayloadTooLarge { limit: limit.unwrap_or_default() }),
        TRIPPED_TIMEOUT => closing(ApiError::RequestTimeout { after_ms: timeout.as_millis() as u64 }),
        _ => response,
    }
}

/// An error answer after which the connection is closed: the rest of the
/// body is not read.
fn closing(error: ApiError) -> Response {
    let mut response = error.into_response();
    response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Why a guarded body stopped.
#[derive(Debug, thiserror::Error)]
enum BodyCut {
    #[error("request body exceeds {0} bytes")]
    TooLarge(usize),
    #[error("request body not complete within the body-read timeout")]
    Timeout,
}

/// A request body with a size limit, checked as each frame arrives, and a
/// deadline for the whole body.
struct GuardedBody {
    inner: Body,
    limit: Option<usize>,
    seen: usize,
    deadline: Pin<Box<tokio::time::Sleep>>,
    tripped: Arc<AtomicU8>,
}

impl HttpBody for GuardedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        if this.deadline.as_mut().poll(cx).is_ready() {
            this.tripped.store(TRIPPED_TIMEOUT, Ordering::Release);
            return Poll::Ready(Some(Err(axum::Error::new(BodyCut::Timeout))));
        }
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        if let Some(Ok(data)) = frame.as_ref().map(|f| f.as_ref().map(http_body::Frame::data_ref)) {
            this.seen = this.seen.saturating_add(data.map_or(0, Bytes::len));
            if let Some(limit) = this.limit.filter(|l| this.seen > *l) {
                this.tripped.store(TRIPPED_TOO_LARGE, Ordering::Release);
                return Poll::Ready(Some(Err(axum::Error::new(BodyCut::TooLarge(limit)))));
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Per-connection socket options. Stream chunks are small writes: without
/// `TCP_NODELAY`, Nagle's algorithm holds each one back until the client has
/// acknowledged the previous one.
fn tune_connection(tcp: &tokio::net::TcpStream) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY on a client connection");
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutdown signal received; draining");
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU8, Ordering};
    use std::time::Duration;

    use axum::http::Method;
    use tokio::time::Instant;

    use super::{Opening, accept_backoff, body_limit, idle_wake, is_chat, is_valid_request_id, tune_connection};
    use crate::config::EdgeConfig;

    #[test]
    fn only_posts_of_the_chat_path_skip_the_router() {
        let request = |method: Method, path: &str| {
            axum::extract::Request::builder().method(method).uri(path).body(axum::body::Body::empty()).unwrap()
        };
        for path in ["/v1/chat/completions", "/api/v1/chat/completions", "/v1/chat/completions?x=1"] {
            assert!(is_chat(&request(Method::POST, path)), "{path}");
        }
        for (method, path) in [
            (Method::GET, "/v1/chat/completions"),
            (Method::PUT, "/api/v1/chat/completions"),
            (Method::POST, "/v1/chat/completions/"),
            (Method::POST, "/apiv1/chat/completions"),
            (Method::POST, "/api/api/v1/chat/completions"),
            (Method::POST, "/V1/chat/completions"),
            (Method::POST, "/v1/models"),
        ] {
            assert!(!is_chat(&request(method.clone(), path)), "{method} {path}");
        }
    }

    #[test]
    fn the_first_bytes_choose_the_protocol_and_a_partial_preface_is_left_to_hyper() {
        assert_eq!(Opening::of(b"POST /v1/chat/completions HTTP/1.1\r\n"), Opening::Http1);
        assert_eq!(Opening::of(b"G"), Opening::Http1);
        assert_eq!(Opening::of(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), Opening::Http2);
        assert_eq!(Opening::of(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\x12\x04"), Opening::Http2);
        assert_eq!(Opening::of(b"PRI * HTTP/2"), Opening::Unsure);
        assert_eq!(Opening::of(b"PRI * HTTP/1.1"), Opening::Http1);
        assert_eq!(Opening::of(b""), Opening::Unsure);
    }

    #[test]
    fn each_route_gets_its_body_limit_under_both_prefixes() {
        let edge = EdgeConfig { max_control_body_bytes: 10, max_upload_bytes: 20, ..EdgeConfig::default() };
        for prefix in ["", "/api"] {
            let limit = |method: &Method, path: &str| body_limit(method, &format!("{prefix}{path}"), &edge);
            assert_eq!(limit(&Method::POST, "/v1/chat/completions"), None, "chat enforces its own limit");
            assert_eq!(limit(&Method::POST, "/v1/plugins/groq"), Some(20));
            assert_eq!(limit(&Method::POST, "/v1/plugins/reload"), Some(10));
            assert_eq!(limit(&Method::POST, "/v1/plugins/groq/canary"), Some(10));
            assert_eq!(limit(&Method::POST, "/v1/tokens/issue"), Some(10));
            assert_eq!(limit(&Method::PATCH, "/v1/status/routing"), Some(10));
            assert_eq!(limit(&Method::GET, "/v1/plugins/groq"), Some(10), "only a POST is an upload");
            assert_eq!(limit(&Method::POST, "/v1/anything/else"), Some(10), "unknown routes get the small limit");
        }
        assert_eq!(body_limit(&Method::POST, "/apiv1/plugins/x", &edge), Some(10));
    }

    fn guarded(
        inner: axum::body::Body,
        limit: Option<usize>,
        deadline: Duration,
    ) -> (super::GuardedBody, Arc<AtomicU8>) {
        let tripped = Arc::new(AtomicU8::new(super::TRIPPED_NONE));
        let deadline = Box::pin(tokio::time::sleep(deadline));
        (super::GuardedBody { inner, limit, seen: 0, deadline, tripped: tripped.clone() }, tripped)
    }

    #[tokio::test]
    async fn a_guarded_body_stops_past_its_limit_and_at_its_deadline() {
        use http_body_util::BodyExt;
        let (body, tripped) = guarded(axum::body::Body::from(vec![0u8; 100]), Some(10), Duration::from_secs(60));
        assert!(body.collect().await.is_err());
        assert_eq!(tripped.load(Ordering::Acquire), super::TRIPPED_TOO_LARGE);

        let (body, tripped) = guarded(axum::body::Body::from(vec![0u8; 10]), Some(10), Duration::from_secs(60));
        assert_eq!(body.collect().await.map(|b| b.to_bytes().len()).ok(), Some(10), "exactly the limit passes");
        assert_eq!(tripped.load(Ordering::Acquire), super::TRIPPED_NONE);

        let endless = futures_util::stream::pending::<Result<bytes::Bytes, std::io::Error>>();
        let (body, tripped) = guarded(axum::body::Body::from_stream(endless), None, Duration::from_millis(50));
        let started = std::time::Instant::now();
        assert!(body.collect().await.is_err());
        assert_eq!(tripped.load(Ordering::Acquire), super::TRIPPED_TIMEOUT);
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_connection_is_idle_only_without_a_request_in_progress() {
        let now = Instant::now();
        let idle = Duration::from_secs(5);
        let last = now - Duration::from_secs(6);
        assert_eq!(idle_wake(0, last, idle, now), None, "idle past the timeout: close");
        assert_eq!(idle_wake(1, last, idle, now), Some(now + idle), "a request in progress is never idle");
        let recent = now - Duration::from_secs(2);
        assert_eq!(idle_wake(0, recent, idle, now), Some(recent + idle), "look again when it would be due");
    }

    #[test]
    fn accept_failures_back_off_doubling_up_to_a_second() {
        let mut wait = accept_backoff(None);
        assert_eq!(wait, Duration::from_millis(5));
        for _ in 0..20 {
            let next = accept_backoff(Some(wait));
            assert!(next >= wait && next <= Duration::from_secs(1));
            wait = next;
        }
        assert_eq!(wait, Duration::from_secs(1));
    }

    #[test]
    fn request_ids_are_checked_against_the_reference_pattern() {
        assert!(is_valid_request_id(b"abc-123_x.y:z"));
        assert!(!is_valid_request_id(b""));
        assert!(!is_valid_request_id(b"has space"));
        assert!(!is_valid_request_id(&[b'a'; 129]));
    }

    #[tokio::test]
    async fn client_connections_get_tcp_nodelay() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        assert!(!accepted.nodelay().unwrap(), "accepted sockets start with Nagle on");
        tune_connection(&accepted);
        assert!(accepted.nodelay().unwrap());
    }
}
