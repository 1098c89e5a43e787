//! Shared harness for the end-to-end tests: the real `freellm` binary with
//! the real provider components, against local mock upstreams.
//!
//! - [`build_artifacts`] builds the gateway binary and the components once
//!   per test process (cargo makes concurrent builds wait for each other).
//! - [`MockUpstream`] is a small axum server that records every request and
//!   answers with whatever the test scripts: JSON, SSE with delays, a hang,
//!   or a connection cut.
//! - [`Gateway`] writes a `plugins.toml`, starts the binary on a port the
//!   system picks (`PORT=0`; the address is read from its log, so no other
//!   process can take the port between a choice and the bind) with a clean
//!   environment and waits for `/healthz`;
//!   [`Gateway::start_fleet`] starts several against one Redis.
//! - [`RedisServer`] runs the real `redis-server` on a free loopback port
//!   with a temporary directory (another port when the one found free is
//!   taken first, checked by the directory of the server that answers); it
//!   can be killed and restarted on the same port, and is killed on drop.

use std::collections::VecDeque;
use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tokio::process::{Child, Command};

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// Where the wasm components are built.
pub fn component_path(crate_name: &str) -> PathBuf {
    workspace_root().join("target/wasm32-wasip2/wasm").join(format!("{}.wasm", crate_name.replace('-', "_")))
}

/// Where the end-to-end tests cache compiled components: every gateway
/// they start and every `freellm plugin` run shares it.
pub fn component_cache() -> PathBuf {
    workspace_root().join("target/e2e-component-cache")
}

/// `freellm plugin <subcommand> --cache-dir <the tests' cache>`, for the
/// caller to add its arguments to and run.
pub fn plugin_command(subcommand: &str) -> std::process::Command {
    let mut cmd = std::process::Command::new(build_artifacts());
    cmd.arg("plugin").arg(subcommand).arg("--cache-dir").arg(component_cache());
    cmd
}

/// Builds the gateway binary and the provider components, once per process.
pub fn build_artifacts() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let root = workspace_root();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let run = |args: &[&str]| {
            let mut cmd = std::process::Command::new(&cargo);
            // Cargo gives a test process the variables of the package under
            // test; build scripts that watch one (ring watches
            // CARGO_MANIFEST_DIR) would then rebuild here and again in the
            // next plain `cargo build`, every run.
            for (name, _) in std::env::vars_os() {
                let name = name.to_string_lossy();
                if CARGO_TEST_VARS.iter().any(|prefix| name.starts_with(prefix)) {
                    cmd.env_remove(&*name);
                }
            }
            let status = cmd.args(args).current_dir(&root).status().expect("cargo runs");
            assert!(status.success(), "cargo {args:?} failed");
        };
        let mut wasm = vec!["build", "--quiet", "--profile", "wasm", "--target", "wasm32-wasip2"];
        for p in PROVIDER_CRATES {
            wasm.extend(["-p", p]);
        }
        run(&wasm);
        // Swap-test variants, one build per feature, each kept under its name.
        let variants = root.join("target/e2e-swap");
        std::fs::create_dir_all(&variants).expect("variants dir");
        for (variant, features) in
            [("v1", None), ("v2", Some("v2")), ("broken", Some("broken")), ("flaky", Some("flaky"))]
        {
            let mut args = vec![
                "build",
                "--quiet",
                "--profile",
                "wasm",
                "--target",
                "wasm32-wasip2",
                "-p",
                "freellm-provider-swaptest",
            ];
            if let Some(f) = features {
                args.extend(["--features", f]);
            }
            run(&args);
            std::fs::copy(component_path("freellm-provider-swaptest"), variants.join(format!("{variant}.wasm")))
                .expect("copy swap variant");
        }
        // Leave the default build in place for the other tests.
        run(&["build", "--quiet", "--profile", "wasm", "--target", "wasm32-wasip2", "-p", "freellm-provider-swaptest"]);
        // The non-OpenAI test adapter with a wrong embedded fixture.
        let plain =
            ["build", "--quiet", "--profile", "wasm", "--target", "wasm32-wasip2", "-p", "freellm-test-adapter-plain"];
        run(&[&plain[..], &["--features", "wrong-fixture"]].concat());
        std::fs::copy(component_path("freellm-test-adapter-plain"), variants.join("plain-wrong-fixture.wasm"))
            .expect("copy plain-wrong-fixture variant");
        run(&plain);
        run(&["build", "--quiet", "--target", "wasm32-wasip2", "-p", "freellm-wrong-world"]);
        std::fs::copy(
            root.join("target/wasm32-wasip2/debug/freellm-wrong-world.wasm"),
            variants.join("wrong-world.wasm"),
        )
        .expect("copy wrong-world component");
        // As scripts/test.sh builds it: with `cargo test`'s feature set, so
        // this is a no-op inside a workspace test run, not a second build.
        run(&["build", "--quiet", "--workspace", "--bins", "--tests"]);
        root.join("target/debug/freellm")
    })
}

/// Variables cargo sets for a test process (not the caller's own settings
/// such as `CARGO_HOME` or `CARGO_TARGET_DIR`).
const CARGO_TEST_VARS: &[&str] = &[
    "CARGO_MANIFEST_",
    "CARGO_PKG_",
    "CARGO_CRATE_NAME",
    "CARGO_BIN_",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_TARGET_TMPDIR",
    "CARGO_RUSTC_CURRENT_DIR",
];

/// Component crates the suite needs.
pub const PROVIDER_CRATES: &[&str] = &[
    "freellm-provider-groq",
    "freellm-provider-gemini",
    "freellm-provider-mistral",
    "freellm-provider-cerebras",
    "freellm-provider-nim",
    "freellm-provider-ollama",
    "freellm-provider-openai-compatible",
    "freellm-provider-cohere",
    "freellm-provider-hostile",
    "freellm-provider-swaptest",
    "freellm-test-adapter-v01",
    "freellm-test-adapter-v02",
    "freellm-test-adapter-plain",
];

/// A swap-test variant (`v1`, `v2`, `broken`, `flaky`), `wrong-world`, or
/// `plain-wrong-fixture` (the non-OpenAI test adapter embedding a wrong
/// fixture).
pub fn swap_variant(name: &str) -> PathBuf {
    build_artifacts();
    workspace_root().join("target/e2e-swap").join(format!("{name}.wasm"))
}

// ---------------------------------------------------------------- mock upstream

/// One request the mock received.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// Method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Headers (lower-case names).
    pub headers: HeaderMap,
    /// Body bytes.
    pub body: Bytes,
    /// When it arrived.
    pub at: Instant,
    /// HTTP version, e.g. `HTTP/1.1` or `HTTP/2.0`.
    pub version: String,
}

impl Recorded {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("upstream request body is JSON")
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).map(|v| v.to_str().unwrap_or_default().to_owned())
    }
}

/// What the mock answers.
#[derive(Clone, Debug)]
pub enum Reply {
    /// A status, extra headers and a JSON body.
    Json { status: u16, headers: Vec<(String, String)>, body: serde_json::Value },
    /// `text/event-stream` pieces, each sent after its delay. When `cut` is
    /// true the connection is aborted after the last piece instead of
    /// ending cleanly.
    Stream { pieces: Vec<(Duration, String)>, cut: bool },
    /// Never answers (until the client gives up).
    Hang,
    /// Another reply, sent after a delay (a slow first byte).
    Delayed(Duration, Box<Reply>),
    // Hostile upstreams (stream bounds and commit rules).
    /// Any status, content type and body bytes (garbage instead of SSE, an
    /// empty stream).
    Raw { status: u16, content_type: String, body: Bytes },
    /// `text/event-stream`: `prefix`, then `piece` again and again, one
    /// every `every`, `count` times (`None`: until the reader hangs up).
    /// An endless stream, `data:` lines without a blank line, a slow
    /// trickle of one event's bytes.
    Repeat { prefix: String, piece: String, every: Duration, count: Option<u64> },
}

impl Reply {
    /// 200 with a JSON body.
    pub fn ok(body: serde_json::Value) -> Self {
        Self::Json { status: 200, headers: Vec::new(), body }
    }

    /// A status with an OpenAI-style error body.
    pub fn error(status: u16, message: &str) -> Self {
        Self::Json {
            status,
            headers: Vec::new(),
            body: serde_json::json!({"error": {"message": message, "type": "error"}}),
        }
    }

    /// Adds a response header.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        if let Self::Json { headers, .. } = &mut self {
            headers.push((name.to_owned(), value.to_owned()));
        }
        self
    }

    /// A clean SSE stream of the given `data:` payloads (no delays).
    pub fn sse(data: &[&str]) -> Self {
        Self::Stream { pieces: data.iter().map(|d| (Duration::ZERO, format!("data: {d}\n\n"))).collect(), cut: false }
    }
}

type Script = Box<dyn Fn(&Recorded) -> Reply + Send + Sync>;

struct MockState {
    requests: Mutex<Vec<Recorded>>,
    queue: Mutex<VecDeque<Reply>>,
    fallback: Script,
}

/// A local mock of an OpenAI-compatible upstream.
pub struct MockUpstream {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    state: Arc<MockState>,
}

impl MockUpstream {
    /// Starts a mock that answers every request with `fallback(request)`,
    /// unless a queued reply is waiting.
    pub async fn start(fallback: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> Self {
        let (state, app) = mock_app(fallback);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind mock");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, state }
    }

    /// Like [`start`](Self::start), over HTTPS, offering HTTP/2 and
    /// HTTP/1.1 by ALPN: the certificate (for
    /// `127.0.0.1` and `localhost`) is signed by the test CA in
    /// `tests/fixtures/tls/ca.pem` (see [`test_ca_file`]), which no system
    /// trusts. `url` is `https://127.0.0.1:<port>`.
    pub async fn start_tls(fallback: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> Self {
        use hyper_util::rt::{TokioExecutor, TokioIo};
        use hyper_util::service::TowerToHyperService;
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

        let dir = workspace_root().join("tests/fixtures/tls");
        let certs = CertificateDer::pem_file_iter(dir.join("server.pem"))
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .expect("test server certificate");
        let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).expect("test server key");
        let mut config = tokio_rustls::rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("TLS server config");
        // Offer HTTP/2 as hosted APIs do; the gateway should take it.
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));

        let (state, app) = mock_app(fallback);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind mock");
        let url = format!("https://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let (acceptor, app) = (acceptor.clone(), app.clone());
                tokio::spawn(async move {
                    // A client that rejects the certificate ends here.
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let service = TowerToHyperService::new(app);
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Self { url, state }
    }

    /// A mock answering every request with a canned chat completion.
    pub async fn completing() -> Self {
        Self::start(|r| Reply::ok(completion(r.json()["model"].as_str().unwrap_or("m"), "Hello from mock"))).await
    }

    /// Queues replies used (in order) before the fallback.
    pub fn enqueue(&self, replies: impl IntoIterator<Item = Reply>) {
        self.state.queue.lock().expect("lock").extend(replies);
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().expect("lock").clone()
    }
}

fn mock_app(fallback: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> (Arc<MockState>, axum::Router) {
    let state = Arc::new(MockState {
        requests: Mutex::new(Vec::new()),
        queue: Mutex::new(VecDeque::new()),
        fallback: Box::new(fallback),
    });
    let app = axum::Router::new().fallback(handle).with_state(state.clone());
    (state, app)
}

/// The PEM file of the CA that signed [`MockUpstream::start_tls`]'s
/// certificate (for `UPSTREAM_CA_FILE`).
pub fn test_ca_file() -> PathBuf {
    workspace_root().join("tests/fixtures/tls/ca.pem")
}

async fn handle(State(state): State<Arc<MockState>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 64 << 20).await.unwrap_or_default();
    let recorded = Recorded {
        method: parts.method.to_string(),
        path: parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_default(),
        headers: parts.headers,
        body,
        at: Instant::now(),
        version: format!("{:?}", parts.version),
    };
    let mut reply = state.queue.lock().expect("lock").pop_front().unwrap_or_else(|| (state.fallback)(&recorded));
    state.requests.lock().expect("lock").push(recorded);
    while let Reply::Delayed(delay, inner) = reply {
        tokio::time::sleep(delay).await;
        reply = *inner;
    }
    match reply {
        Reply::Json { status, headers, body } => {
            let mut response =
                (StatusCode::from_u16(status).unwrap_or(StatusCode::OK), axum::Json(body)).into_response();
            for (k, v) in headers {
                if let (Ok(k), Ok(v)) = (k.parse::<axum::http::HeaderName>(), v.parse()) {
                    response.headers_mut().insert(k, v);
                }
            }
            response
        }
        Reply::Stream { pieces, cut } => {
            let stream = futures_util::stream::unfold((pieces.into_iter(), cut), |(mut it, cut)| async move {
                match it.next() {
                    Some((delay, text)) => {
                        tokio::time::sleep(delay).await;
                        Some((Ok::<_, std::io::Error>(Bytes::from(text)), (it, cut)))
                    }
                    None if cut => Some((Err(std::io::Error::other("cut on purpose")), (it, false))),
                    None => None,
                }
            });
            Response::builder()
                .header("content-type", "text/event-stream")
                .body(Body::from_stream(stream))
                .expect("response")
        }
        Reply::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::GATEWAY_TIMEOUT.into_response()
        }
        Reply::Delayed(..) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        Reply::Raw { status, content_type, body } => Response::builder()
            .status(StatusCode::from_u16(status).unwrap_or(StatusCode::OK))
            .header("content-type", content_type)
            .body(Body::from(body))
            .expect("response"),
        Reply::Repeat { prefix, piece, every, count } => {
            let piece = Bytes::from(piece);
            let first = (!prefix.is_empty()).then(|| Bytes::from(prefix));
            let stream = futures_util::stream::unfold((first, 0u64), move |(first, sent)| {
                let piece = piece.clone();
                async move {
                    if let Some(first) = first {
                        return Some((Ok::<_, std::io::Error>(first), (None, sent)));
                    }
                    if count.is_some_and(|n| sent >= n) {
                        return None;
                    }
                    if every.is_zero() {
                        // Lets the writer notice a reader that hung up.
                        tokio::task::yield_now().await;
                    } else {
                        tokio::time::sleep(every).await;
                    }
                    Some((Ok(piece), (None, sent + 1)))
                }
            });
            Response::builder()
                .header("content-type", "text/event-stream")
                .body(Body::from_stream(stream))
                .expect("response")
        }
    }
}

/// An OpenAI `chat.completion` body.
pub fn completion(model: &str, content: &str) -> serde_json::Value {
    serde_json::json!({
        "id": "chatcmpl-mock",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
    })
}

/// An OpenAI `chat.completion.chunk` payload.
pub fn chunk(content: &str, finish: Option<&str>) -> String {
    serde_json::json!({
        "id": "chatcmpl-mock",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "m",
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": finish}],
    })
    .to_string()
}

// ---------------------------------------------------------------- gateway

/// A running gateway process.
pub struct Gateway {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    /// The HTTP client tests use.
    pub http: reqwest::Client,
    /// The data directory (a temporary directory).
    pub data_dir: tempfile::TempDir,
    child: Child,
    log: Arc<Mutex<String>>,
}

/// How to start a gateway.
pub struct GatewayOptions {
    /// The `plugins.toml` text (component paths may use `{component:<crate>}`).
    pub config: String,
    /// Environment variables.
    pub env: Vec<(String, String)>,
}

/// A `plugins.toml` with groq and ollama, both real components.
pub fn default_config() -> String {
    "[providers.groq]\ncomponent = \"{component:freellm-provider-groq}\"\n\n\
     [providers.ollama]\ncomponent = \"{component:freellm-provider-ollama}\"\n\
     settings_env = { models = \"OLLAMA_MODELS\" }\n"
        .to_owned()
}

/// [`default_config`] with groq's declared free tier replaced: `rpm`
/// requests per minute per key (0: unlimited) and nothing else limited.
pub fn config_with_groq_rpm(rpm: u32) -> String {
    default_config().replacen(
        "[providers.ollama]",
        &format!("[providers.groq.limits]\nrpm = {rpm}\nrpd = 0\ntpm = 0\ntpd = 0\n\n[providers.ollama]"),
        1,
    )
}

impl Gateway {
    /// Starts a gateway with the default config and the given environment.
    pub async fn start(env: &[(&str, &str)]) -> Self {
        Self::start_with(GatewayOptions {
            config: default_config(),
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        })
        .await
    }

    /// Starts a gateway as described.
    pub async fn start_with(options: GatewayOptions) -> Self {
        Self::start_limited(options, None).await
    }

    /// Starts a gateway as described, its address space limited to
    /// `address_space` bytes when given (`RLIMIT_AS`, set by util-linux's
    /// `prlimit` before it runs the gateway in its place).
    pub async fn start_limited(options: GatewayOptions, address_space: Option<u64>) -> Self {
        let bin = build_artifacts();
        let data_dir = tempfile::tempdir().expect("tempdir");
        let mut config = options.config;
        for krate in PROVIDER_CRATES {
            config = config.replace(&format!("{{component:{krate}}}"), &component_path(krate).display().to_string());
        }
        let config_path = data_dir.path().join("plugins.toml");
        std::fs::write(&config_path, config).expect("write config");
        let cache = component_cache();
        let mut cmd = match address_space {
            Some(bytes) => {
                let mut cmd = Command::new("prlimit");
                cmd.arg(format!("--as={bytes}")).arg("--").arg(bin);
                cmd
            }
            None => Command::new(bin),
        };
        cmd.arg("serve")
            .arg("--config")
            .arg(&config_path)
            .env_clear()
            .env("PORT", "0")
            .env("HOST", "127.0.0.1")
            .env("FREELLM_DATA_DIR", data_dir.path().join("data"))
            .env("FREELLM_CACHE_DIR", &cache)
            .env("LOG_LEVEL", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in &options.env {
            match k.as_str() {
                "LOG_LEVEL" => cmd.env(k, showing_the_listening_line(v)),
                _ => cmd.env(k, v),
            };
        }
        let mut child = cmd.spawn().expect("spawn gateway");
        let log = Arc::new(Mutex::new(String::new()));
        if let Some(stderr) = child.stderr.take() {
            let log = log.clone();
            tokio::spawn(async move {
                use tokio::io::AsyncBufReadExt;
                let mut lines = tokio::io::BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    log.lock().expect("lock").push_str(&line);
                    log.lock().expect("lock").push('\n');
                }
            });
        }
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client");
        let mut gateway = Self { url: String::new(), http, data_dir, child, log };
        gateway.wait_healthy().await;
        gateway
    }

    /// The `plugins.toml` the gateway runs with (and watches).
    pub fn config_file(&self) -> PathBuf {
        self.data_dir.path().join("plugins.toml")
    }

    /// Stops the gateway gracefully (SIGTERM) and waits for it to exit.
    pub async fn terminate(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }

    /// Sends SIGTERM without waiting (the test watches what follows).
    pub fn signal_terminate(&self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
        }
    }

    /// Waits up to `within` for the process to exit; its status, if it did.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        tokio::time::timeout(within, self.child.wait()).await.ok().and_then(Result::ok)
    }

    /// Kills the gateway (SIGKILL), as a crash would, and waits for it.
    pub async fn kill(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    /// Starts a gateway that must refuse to boot; returns its exit code and log.
    pub async fn start_failing(options: GatewayOptions) -> (Option<i32>, String) {
        let bin = build_artifacts();
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("plugins.toml");
        std::fs::write(&config_path, &options.config).expect("write config");
        let mut cmd = std::process::Command::new(bin);
        cmd.arg("serve")
            .arg("--config")
            .arg(&config_path)
            .env_clear()
            .env("PORT", "0")
            .env("FREELLM_DATA_DIR", dir.path().join("data"));
        for (k, v) in &options.env {
            cmd.env(k, v);
        }
        let out = tokio::task::spawn_blocking(move || cmd.output()).await.expect("join").expect("run gateway");
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    }

    /// Waits for the gateway's listening line (its address, and so
    /// [`Gateway::url`]), then for `/healthz`.
    async fn wait_healthy(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("gateway exited with {status} during start-up:\n{}", self.log());
            }
            if self.url.is_empty()
                && let Some(port) = listening_port(&self.log())
            {
                self.url = format!("http://127.0.0.1:{port}");
            }
            if !self.url.is_empty()
                && let Ok(r) = self.http.get(format!("{}/healthz", self.url)).send().await
                && r.status().is_success()
            {
                return;
            }
            assert!(Instant::now() < deadline, "gateway did not become healthy:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The gateway's resident memory in KiB (`VmRSS` of its process), when
    /// the platform reports it.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()?)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// Everything the gateway logged so far.
    pub fn log(&self) -> String {
        self.log.lock().expect("lock").clone()
    }

    /// Waits until the gateway's log has `line`, for at most `within`;
    /// whether it came.
    pub async fn wait_for_log(&self, line: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while !self.log().contains(line) {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// POSTs a JSON chat request.
    pub async fn chat(&self, body: serde_json::Value) -> reqwest::Response {
        self.http.post(format!("{}/v1/chat/completions", self.url)).json(&body).send().await.expect("chat request")
    }

    /// POST a chat request whose JSON body is this text, sent as written.
    pub async fn chat_text(&self, body: String) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/chat/completions", self.url))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("chat request")
    }

    /// GET a path.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(format!("{}{path}", self.url)).send().await.expect("get")
    }

    /// Asserts the gateway still answers `/healthz`.
    pub async fn assert_healthy(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("gateway died with {status}:\n{}", self.log());
        }
        // A fresh connection: the previous request may have ended its own
        // (e.g. a 413 answered before the body was read).
        let r = reqwest::Client::new().get(format!("{}/healthz", self.url)).send().await.expect("healthz");
        assert_eq!(r.status(), 200, "gateway unhealthy:\n{}", self.log());
    }
}

// ---------------------------------------------------------------- redis

/// A real `redis-server` on a free loopback port, in a temporary directory;
/// killed on drop.
pub struct RedisServer {
    /// The port it listens on (kept across [`RedisServer::restart`]).
    pub port: u16,
    dir: tempfile::TempDir,
    persist: bool,
    password: Option<String>,
    child: Option<std::process::Child>,
}

impl RedisServer {
    /// Starts a server without persistence (`--save "" --appendonly no`).
    pub async fn start() -> Self {
        Self::start_with(false, None).await
    }

    /// Starts a server that writes an append-only file in its directory,
    /// so a [`restart`](Self::restart) keeps its data.
    pub async fn start_persistent() -> Self {
        Self::start_with(true, None).await
    }

    /// Starts a server that requires `password` (`--requirepass`).
    pub async fn start_with_password(password: &str) -> Self {
        Self::start_with(false, Some(password.to_owned())).await
    }

    async fn start_with(persist: bool, password: Option<String>) -> Self {
        let mut server =
            Self { port: free_port(), dir: tempfile::tempdir().expect("tempdir"), persist, password, child: None };
        // A port found free can be taken before the server binds it (by
        // any process, another test's server included): the server then
        // exits, or another answers in its place. Another port, then.
        for _ in 0..5 {
            if server.spawn().await {
                return server;
            }
            server.kill();
            server.port = free_port();
        }
        panic!("redis-server did not start on a free port in five tries");
    }

    /// `redis://127.0.0.1:<port>` (with the password, when it has one).
    pub fn url(&self) -> String {
        match &self.password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// Starts the server on its port; whether it is the one that answers
    /// there.
    async fn spawn(&mut self) -> bool {
        let mut cmd = std::process::Command::new(redis_server_binary());
        cmd.arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--save", ""])
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--appendonly", if self.persist { "yes" } else { "no" }])
            .args(["--appendfsync", "always"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(p) = &self.password {
            cmd.args(["--requirepass", p]);
        }
        self.child = Some(cmd.spawn().expect("redis-server runs (install it: apt-get install redis-server)"));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.child.as_mut().is_some_and(|child| matches!(child.try_wait(), Ok(Some(_)))) {
                return false; // it exited: the port was taken
            }
            if self.ping().await {
                return self.is_ours().await;
            }
            assert!(Instant::now() < deadline, "redis-server did not answer on port {}", self.port);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether the server answering on the port is this one: its working
    /// directory is this one's.
    async fn is_ours(&self) -> bool {
        let dir = std::fs::canonicalize(self.dir.path()).unwrap_or_else(|_| self.dir.path().to_owned());
        self.command(&["CONFIG", "GET", "dir"]).await.is_some_and(|reply| reply.contains(&*dir.to_string_lossy()))
    }

    /// Sends one command (RESP) and returns the raw reply.
    pub async fn command(&self, args: &[&str]) -> Option<String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.ok()?;
        let mut frame = String::new();
        if let Some(p) = &self.password {
            frame.push_str(&format!("*2\r\n$4\r\nAUTH\r\n${}\r\n{p}\r\n", p.len()));
        }
        frame.push_str(&format!("*{}\r\n", args.len()));
        for a in args {
            frame.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        conn.write_all(frame.as_bytes()).await.ok()?;
        let mut buf = vec![0u8; 64 << 10];
        let n = tokio::time::timeout(Duration::from_secs(2), conn.read(&mut buf)).await.ok()?.ok()?;
        let mut reply = String::from_utf8_lossy(&buf[..n]).into_owned();
        if self.password.is_some() {
            reply = reply.strip_prefix("+OK\r\n").map(str::to_owned).unwrap_or(reply);
        }
        Some(reply)
    }

    async fn ping(&self) -> bool {
        self.command(&["PING"]).await.is_some_and(|r| r.starts_with("+PONG"))
    }

    /// Kills the server (SIGKILL, as a crash would) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (after [`kill`](Self::kill)).
    pub async fn restart(&mut self) {
        self.kill();
        assert!(self.spawn().await, "redis-server did not start again on port {}", self.port);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `redis-server` on the `PATH` (`.ci/run` installs it when missing).
fn redis_server_binary() -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|p| p.join("redis-server")).find(|p| p.is_file()))
        .unwrap_or_else(|| PathBuf::from("/usr/bin/redis-server"))
}

impl Gateway {
    /// Starts `n` gateways at once, each with its own data directory, the
    /// `plugins.toml` and environment `options(i)` gives, plus
    /// `FREELLM_REDIS_URL` (the shared Redis) and `FREELLM_INSTANCE_ID=gw-<i>`.
    pub async fn start_fleet(n: usize, redis_url: &str, options: impl Fn(usize) -> GatewayOptions) -> Vec<Self> {
        let starts = (0..n).map(|i| {
            let mut o = options(i);
            o.env.push(("FREELLM_REDIS_URL".into(), redis_url.to_owned()));
            o.env.push(("FREELLM_INSTANCE_ID".into(), format!("gw-{i}")));
            Self::start_with(o)
        });
        futures_util::future::join_all(starts).await
    }
}

/// A test's `LOG_LEVEL`, with the server's `info` lines kept when its
/// default level would hide them: the harness reads the gateway's address
/// from its listening line.
fn showing_the_listening_line(level: &str) -> String {
    let default = level.split(',').find(|directive| !directive.contains('=')).unwrap_or("info");
    match default.trim().to_ascii_lowercase().as_str() {
        "warn" | "error" | "off" => format!("{level},freellm::http::server=info"),
        _ => level.to_owned(),
    }
}

/// The port in the gateway's `FreeLLM gateway listening address=...` log
/// line, once it is there (the line may carry colour codes around the
/// field's name, never inside its value).
fn listening_port(log: &str) -> Option<u16> {
    let line = log.lines().find(|l| l.contains("FreeLLM gateway listening"))?;
    let (_, rest) = line.split_once("127.0.0.1:")?;
    let digits = rest.find(|c: char| !c.is_ascii_digit()).map_or(rest, |end| &rest[..end]);
    digits.parse().ok()
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// A minimal chat request body.
pub fn chat_body(model: &str) -> serde_json::Value {
    serde_json::json!({"model": model, "messages": [{"role": "user", "content": "Hi"}]})
}

/// Reads an SSE response body and returns its `data:` payloads.
pub async fn sse_data(response: reqwest::Response) -> Vec<String> {
    let text = response.text().await.expect("stream body");
    // The SSE rule: an event's `data:` lines are joined with `\n`.
    text.split("\n\n")
        .filter_map(|event| {
            let lines: Vec<&str> = event.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
            (!lines.is_empty()).then(|| lines.join("\n"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::listening_port;

    #[test]
    fn a_log_level_that_hides_the_listening_line_keeps_the_servers_info() {
        use super::showing_the_listening_line as shown;
        assert_eq!(shown("warn"), "warn,freellm::http::server=info");
        assert_eq!(shown("error,freellm::fleet=debug"), "error,freellm::fleet=debug,freellm::http::server=info");
        assert_eq!(shown("debug"), "debug");
        assert_eq!(shown("info,freellm::fleet::health_sync=debug"), "info,freellm::fleet::health_sync=debug");
    }

    #[test]
    fn the_listening_port_is_read_from_a_plain_coloured_or_json_log() {
        let plain = "INFO freellm::http::server: FreeLLM gateway listening address=127.0.0.1:41234\n";
        let coloured = "\u{1b}[32m INFO\u{1b}[0m FreeLLM gateway listening \u{1b}[3maddress\u{1b}[0m\u{1b}[2m=\u{1b}[0m127.0.0.1:5\n";
        let json = r#"{"level":"INFO","fields":{"message":"FreeLLM gateway listening","address":"127.0.0.1:65535"}}"#;
        assert_eq!(listening_port(&format!("starting\n{plain}")), Some(41234));
        assert_eq!(listening_port(coloured), Some(5));
        assert_eq!(listening_port(json), Some(65535));
        assert_eq!(listening_port("provider enabled base_url=http://127.0.0.1:9/v1\n"), None, "not yet listening");
    }
}
