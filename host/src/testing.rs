//! The in-process test bench: a real gateway (configuration, registry, the
//! real provider components, breakers, keys, routing, streams) built from a
//! `plugins.toml` text and an environment, whose upstream is an in-memory
//! [`MemoryUpstream`] answering with scripted replies. Requests go through
//! [`crate::http::server::app`] with `tower::ServiceExt::oneshot`, so a test runs
//! under `#[tokio::test(start_paused = true)]`: cooldowns, open periods,
//! deadlines and stalls pass in milliseconds of test time.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::http::server::App;
use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Request, StatusCode};
use futures_util::StreamExt;
use http_body_util::BodyExt;
use serde_json::{Value, json};

use crate::config::Config;
use crate::providers::ProviderEntry;
use crate::routing::upstream::{
    BodyError, Exchange, ExchangeBody, ExchangeFuture, OutgoingBody, Upstream, UpstreamError,
};
use crate::state::{Gateway, SharedGateway};

/// The workspace root (the host crate's parent).
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// A provider component built by `scripts/build-components.sh`.
pub fn component(crate_name: &str) -> PathBuf {
    let path =
        workspace_root().join("target/wasm32-wasip2/wasm").join(format!("{}.wasm", crate_name.replace('-', "_")));
    assert!(path.exists(), "{} is missing: run scripts/build-components.sh first", path.display());
    path
}

/// One scripted upstream answer.
#[derive(Clone, Debug)]
pub struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    /// Waited before the response head.
    head_delay: Duration,
    /// Body pieces, each sent after its delay; an `Err` breaks the body off.
    body: Vec<(Duration, Result<Bytes, String>)>,
}

impl Reply {
    /// A status with a JSON body.
    pub fn json(status: u16, body: Value) -> Self {
        Self {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            head_delay: Duration::ZERO,
            body: vec![(Duration::ZERO, Ok(Bytes::from(body.to_string())))],
        }
    }

    /// A 200 chat completion saying `text`.
    pub fn completion(text: &str) -> Self {
        Self::json(
            200,
            json!({
                "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
            }),
        )
    }

    /// An OpenAI-style error answer.
    pub fn error(status: u16, message: &str) -> Self {
        Self::json(status, json!({"error": {"message": message, "type": "error"}}))
    }

    /// A 200 event stream; each `(delay, text)` is one content chunk. With
    /// `finish`, a finish chunk and `[DONE]` close it; without, the stream
    /// ends there (an upstream that broke off).
    pub fn stream(pieces: &[(Duration, &str)], finish: bool) -> Self {
        let chunk = |delta: Value, finish_reason: Value| {
            let c = json!({"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1, "model": "m",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]});
            Ok(Bytes::from(format!("data: {c}\n\n")))
        };
        let mut body: Vec<(Duration, Result<Bytes, String>)> =
            pieces.iter().map(|(delay, text)| (*delay, chunk(json!({"content": text}), Value::Null))).collect();
        if finish {
            body.push((Duration::ZERO, chunk(json!({}), json!("stop"))));
            body.push((Duration::ZERO, Ok(Bytes::from_static(b"data: [DONE]\n\n"))));
        }
        Self {
            status: 200,
            headers: vec![("content-type".into(), "text/event-stream".into())],
            head_delay: Duration::ZERO,
            body,
        }
    }

    /// The same reply, its head sent only after `delay`.
    pub fn after(mut self, delay: Duration) -> Self {
        self.head_delay = delay;
        self
    }

    /// The same reply with one more header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The same reply, its body then silent for `silence` (a stall).
    pub fn then_silent(mut self, silence: Duration) -> Self {
        self.body.push((silence, Ok(Bytes::new())));
        self
    }
}

/// A request the memory upstream received.
#[derive(Clone, Debug)]
pub struct Received {
    /// The URI's host: which provider was called.
    pub host: String,
    /// The `Authorization` header: which key was used.
    pub authorization: Option<String>,
    /// The request body.
    pub body: Bytes,
}

/// An upstream in memory: per host, a queue of scripted replies and a
/// default one for when the queue is empty; every request is recorded.
#[derive(Default)]
pub struct MemoryUpstream {
    queues: Mutex<HashMap<String, VecDeque<Reply>>>,
    defaults: Mutex<HashMap<String, Reply>>,
    received: Mutex<Vec<Received>>,
}

impl MemoryUpstream {
    /// Queues `reply` as the next answer of `host`.
    pub fn push(&self, host: &str, reply: Reply) {
        self.queues.lock().unwrap_or_else(|e| e.into_inner()).entry(host.into()).or_default().push_back(reply);
    }

    /// Answers `host` with `reply` whenever its queue is empty.
    pub fn always(&self, host: &str, reply: Reply) {
        self.defaults.lock().unwrap_or_else(|e| e.into_inner()).insert(host.into(), reply);
    }

    /// The requests received so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// How many requests `host` received.
    pub fn count(&self, host: &str) -> usize {
        self.received().iter().filter(|r| r.host == host).count()
    }

    fn next(&self, host: &str) -> Option<Reply> {
        let queued = self.queues.lock().unwrap_or_else(|e| e.into_inner()).get_mut(host).and_then(VecDeque::pop_front);
        queued.or_else(|| self.defaults.lock().unwrap_or_else(|e| e.into_inner()).get(host).cloned())
    }
}

impl Exchange for MemoryUpstream {
    fn exchange(&self, request: http::Request<OutgoingBody>) -> ExchangeFuture {
        let host = request.uri().host().unwrap_or_default().to_owned();
        let authorization = request.headers().get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let reply = self.next(&host);
        let body = request.into_body();
        let received = &self.received;
        let recorded = async move {
            let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            Received { host, authorization, body }
        };
        // An outgoing body is ready at once: record it before answering.
        let record = futures_util::FutureExt::now_or_never(recorded);
        if let Some(r) = record {
            received.lock().unwrap_or_else(|e| e.into_inner()).push(r);
        }
        Box::pin(async move {
            let Some(reply) = reply else {
                return Err(UpstreamError::Connect("no reply scripted for this host".into()));
            };
            tokio::time::sleep(reply.head_delay).await;
            let body: ExchangeBody = futures_util::stream::iter(reply.body)
                .then(|(delay, piece)| async move {
                    tokio::time::sleep(delay).await;
                    piece.map_err(BodyError)
                })
                .boxed();
            let mut response = http::Response::new(body);
            *response.status_mut() = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            for (name, value) in reply.headers {
                if let (Ok(name), Ok(value)) =
                    (http::HeaderName::from_bytes(name.as_bytes()), http::HeaderValue::from_str(&value))
                {
                    response.headers_mut().append(name, value);
                }
            }
            Ok(response)
        })
    }
}

/// An openai-compatible provider block for [`Bench::start`]: answered by
/// the memory upstream at `http://<id>.test/v1`, its keys in
/// `<ID>_API_KEY`.
pub fn provider(id: &str, capabilities: &str) -> String {
    format!(
        "[providers.{id}]\ncomponent = {component:?}\n[providers.{id}.settings]\n\
         base_url = \"http://{id}.test/v1\"\nmodels = [\"m\"]\nprivacy = \"local\"\n\
         capabilities = {capabilities:?}\nrpm = 1000\n\n",
        component = component("freellm-provider-openai-compatible").display().to_string(),
    )
}

/// A gateway in process, its upstream in memory.
pub struct Bench {
    /// The gateway's state.
    pub gw: SharedGateway,
    /// The application, as `serve` runs it.
    pub app: App,
    /// The scripted upstream.
    pub upstream: Arc<MemoryUpstream>,
    _data: tempfile::TempDir,
}

/// An answer read whole.
pub struct Answer {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON (`Null` when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A response header.
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
    }
}

impl Bench {
    /// Builds a gateway from a `plugins.toml` text and an environment (the
    /// data directory is a fresh temporary one; compiled components are
    /// cached across tests).
    pub async fn start(toml: &str, env: &[(&str, &str)]) -> Self {
        let data = tempfile::tempdir().expect("a temporary directory");
        let mut vars: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        vars.insert("FREELLM_DATA_DIR".into(), data.path().join("data").display().to_string());
        vars.insert(
            "FREELLM_CACHE_DIR".into(),
            workspace_root().join("target/core-test-component-cache").display().to_string(),
        );
        vars.entry("CACHE_ENABLED".into()).or_insert_with(|| "false".into());
        let config = Config::from_toml_str(toml, &workspace_root(), vars).expect("a valid configuration");
        let upstream = Arc::new(MemoryUpstream::default());
        let client = Upstream::with_exchange(config.upstream, upstream.clone());
        let gw = Gateway::start_with(config, client).await.expect("the gateway starts");
        let app = crate::http::server::app(gw.clone());
        Self { gw, app, upstream, _data: data }
    }

    /// A provider of the live registry.
    pub fn provider(&self, id: &str) -> Arc<ProviderEntry> {
        self.gw.registry.load().get(id).cloned().expect("a configured provider")
    }

    /// Sends a chat request for `model` and reads the whole answer (a
    /// stream to its end).
    pub async fn chat(&self, model: &str, stream: bool) -> Answer {
        self.chat_body(json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "Hi"}]})).await
    }

    /// Sends a chat request with this body and reads the whole answer.
    pub async fn chat_body(&self, body: Value) -> Answer {
        self.chat_body_with(body, &[]).await
    }

    /// Sends a chat request with this body and these extra headers, and
    /// reads the whole answer.
    pub async fn chat_body_with(&self, body: Value, headers: &[(&str, &str)]) -> Answer {
        let mut request = Request::post("/v1/chat/completions")
            .header("host", "localhost")
            .header("content-type", "application/json");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let mut request = request.body(Body::from(body.to_string())).expect("a request");
        request.extensions_mut().insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
        let response = self.app.handle(request).await;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        Answer { status: parts.status, headers: parts.headers, body }
    }
}
