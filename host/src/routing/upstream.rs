//! Sending an adapter's request upstream: one pooled HTTP client, the guard
//! rails around what an adapter may ask for, and per-attempt timeouts.
//!
//! The client is hyper's pooled client over rustls (HTTP/1.1, and HTTP/2
//! where the server offers it by ALPN), used directly: a general-purpose
//! client's per-request URL parsing, redirect and proxy layers cost more
//! than the gateway's own routing. It follows no redirects and uses no
//! proxy.
//!
//! The adapter returns a path relative to the host-configured base URL and a
//! list of headers. Here the path is checked (no scheme, authority or `..`),
//! auth and hop-by-hop headers the adapter set are dropped, and the key is
//! injected where the adapter's `auth` placement says. So an adapter never
//! sees a key and cannot send one anywhere else.
//!
//! The wire is a [`Transport`]: the pooled client, or any [`Exchange`] (the
//! in-process tests answer from memory, with scripted delays, under paused
//! time). Both go through the same request building and timeouts.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::BoxStream;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue, InvalidHeaderValue};
use http::{Method, StatusCode, Uri};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnectorBuilder;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::connector::Connector;
use crate::config::UpstreamConfig;
use freellm_runtime::UpstreamBody;
use freellm_runtime::types::{AuthPlacement, HttpMethod, ResponseHead, UpstreamRequest};

/// Largest non-streaming upstream body read.
const MAX_RESPONSE_BYTES: usize = 32 << 20;

/// Headers an adapter may not set: the host owns auth, framing and routing.
const FORBIDDEN_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "host",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "content-length",
    "cookie",
    "x-api-key",
    "api-key",
    "x-goog-api-key",
];

/// Reads the certificates of a PEM file (at least one).
fn read_ca_file(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem =
        std::fs::read(path).map_err(|e| anyhow::anyhow!("cannot read UPSTREAM_CA_FILE {}: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("UPSTREAM_CA_FILE {} is not a PEM certificate bundle: {e}", path.display()))?;
    if certs.is_empty() {
        anyhow::bail!("UPSTREAM_CA_FILE {} holds no PEM certificate", path.display());
    }
    Ok(certs)
}

/// Bytes of an adapter's path and query that are percent-encoded before the
/// URI is parsed (non-ASCII is always encoded): what the URL standard
/// encodes in a path, so a model id with such a character still reaches the
/// upstream. `?`, `&`, `=`, `%` and `/` keep their meaning.
const PATH_ENCODE: &AsciiSet =
    &CONTROLS.add(b' ').add(b'"').add(b'<').add(b'>').add(b'`').add(b'{').add(b'}').add(b'|').add(b'^');

/// Characters encoded in a query value (the key, for `auth: query`).
const QUERY_VALUE_ENCODE: &AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// Why an attempt produced no upstream answer.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The adapter asked for something the host refuses.
    #[error("adapter request rejected: {0}")]
    BadAdapterRequest(String),
    /// Connection refused, reset, DNS failure, TLS failure.
    #[error("connection failed: {0}")]
    Connect(String),
    /// No connection within the connect timeout.
    #[error("no connection within {0:?}")]
    ConnectTimeout(Duration),
    /// No response head within the first-byte timeout.
    #[error("no response within {0:?}")]
    FirstByteTimeout(Duration),
    /// The body broke off or stalled.
    #[error("response body failed: {0}")]
    Body(String),
}

impl UpstreamError {
    /// A connect or first-byte timeout: the upstream is silent, and trying it
    /// again would spend the caller's time on it once more.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::ConnectTimeout(_) | Self::FirstByteTimeout(_))
    }
}

/// Whether an error (or any error it wraps) is an I/O time-out: how the
/// connector reports its connect timeout.
fn is_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(err) = source {
        if err.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut) {
            return true;
        }
        source = err.source();
    }
    false
}

/// The shared upstream client.
#[derive(Clone)]
pub struct Upstream {
    transport: Transport,
    timeouts: UpstreamConfig,
}

/// Where built requests go. An enum, not a trait object, so the pooled
/// client's path costs no allocation or indirection per request.
// One per process: its size does not matter, a pointer hop on every
// request to the client would.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
enum Transport {
    /// The pooled HTTP(S) client.
    Http(Client<Connector, OutgoingBody>),
    /// Any other exchange (an in-memory upstream in tests).
    Exchange(Arc<dyn Exchange>),
}

/// A body failed while it was read.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct BodyError(pub String);

/// The body of an [`Exchange`]'s answer: chunks, or an error that breaks it
/// off.
pub type ExchangeBody = BoxStream<'static, Result<Bytes, BodyError>>;

/// The future of one [`Exchange::exchange`].
pub type ExchangeFuture = Pin<Box<dyn Future<Output = Result<http::Response<ExchangeBody>, UpstreamError>> + Send>>;

/// Something that answers the built upstream requests instead of the
/// network: the seam for in-process tests. It sees the request exactly as
/// the pooled client would send it (URI, headers with the key injected,
/// body); the first-byte timeout applies to its answer as to a real one.
pub trait Exchange: Send + Sync + 'static {
    /// Answers one request with a response head and a body stream.
    fn exchange(&self, request: http::Request<OutgoingBody>) -> ExchangeFuture;
}

/// An upstream request's body: the parts of an [`UpstreamBody`], handed to
/// the connection one after another. hyper writes them out vectored, so a
/// long prompt forwarded from the client's bytes is never copied into one
/// buffer. Its length is exact, so it goes as `Content-Length`.
#[derive(Debug)]
pub struct OutgoingBody {
    parts: std::vec::IntoIter<Bytes>,
    remaining: u64,
}

impl From<UpstreamBody> for OutgoingBody {
    fn from(body: UpstreamBody) -> Self {
        let remaining = body.len() as u64;
        Self { parts: body.into_parts().into_iter(), remaining }
    }
}

impl http_body::Body for OutgoingBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let part = self.parts.next();
        if let Some(part) = &part {
            self.remaining -= part.len() as u64;
        }
        std::task::Poll::Ready(part.map(|part| Ok(Frame::data(part))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// A header value made of `parts`, in one buffer of exactly their length,
/// which the value then keeps as it is (`Bytes` takes a buffer without
/// spare capacity with no allocation of its own, and nothing is copied
/// twice).
pub fn joined_header_value(parts: &[&str]) -> Result<HeaderValue, InvalidHeaderValue> {
    let mut joined = String::with_capacity(parts.iter().map(|p| p.len()).sum());
    for part in parts {
        joined.push_str(part);
    }
    HeaderValue::from_maybe_shared(Bytes::from(joined))
}

/// A response's body, from the wire or from an [`Exchange`].
enum ResponseBody {
    Http(Incoming),
    Exchange(ExchangeBody),
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Http(_) => "ResponseBody::Http",
            Self::Exchange(_) => "ResponseBody::Exchange",
        })
    }
}

/// A response head from upstream, its body not yet read.
#[derive(Debug)]
pub struct UpstreamResponse {
    inner: http::Response<ResponseBody>,
}

impl UpstreamResponse {
    /// HTTP status.
    pub fn status(&self) -> StatusCode {
        self.inner.status()
    }

    /// Response headers.
    pub fn headers(&self) -> &HeaderMap {
        self.inner.headers()
    }

    /// Lets go of the response head (its headers and extensions) once what
    /// it said has been read: a stream keeps only the body. The header
    /// values point into the connection's first read buffer, which they
    /// would otherwise keep alive for the whole stream beside the buffer
    /// the connection reads into next (~8 KiB per open stream).
    pub fn release_head(&mut self) {
        *self.inner.headers_mut() = HeaderMap::new();
        *self.inner.extensions_mut() = http::Extensions::new();
    }

    /// The declared body length, when there is one.
    pub fn content_length(&self) -> Option<u64> {
        self.inner.headers().get(http::header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
    }

    /// The next piece of the body; `None` at its end (trailers are skipped).
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, BodyError> {
        match self.inner.body_mut() {
            ResponseBody::Http(body) => {
                while let Some(frame) = body.frame().await {
                    if let Ok(data) = frame.map_err(|e| BodyError(error_chain(&e)))?.into_data()
                        && !data.is_empty()
                    {
                        return Ok(Some(data));
                    }
                }
                Ok(None)
            }
            ResponseBody::Exchange(body) => {
                while let Some(data) = body.next().await {
                    let data = data?;
                    if !data.is_empty() {
                        return Ok(Some(data));
                    }
                }
                Ok(None)
            }
        }
    }
}

impl Upstream {
    /// Builds the pooled client. HTTPS upstreams are verified against the
    /// bundled public roots plus, when given, the certificates of the PEM
    /// file `ca_file`. Redirects are not followed: an API that redirects a
    /// POST is misconfigured, and following one would send the key on.
    pub fn new(timeouts: UpstreamConfig, ca_file: Option<&Path>) -> anyhow::Result<Self> {
        let mut roots = RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
        if let Some(path) = ca_file {
            for cert in read_ca_file(path)? {
                roots
                    .add(cert)
                    .map_err(|e| anyhow::anyhow!("UPSTREAM_CA_FILE {}: unusable certificate: {e}", path.display()))?;
            }
        }
        let tls =
            rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots)
                .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(timeouts.connect_timeout));
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .build(Connector::new(connector));
        Ok(Self { transport: Transport::Http(client), timeouts })
    }

    /// An upstream whose requests go to `exchange` instead of the network
    /// (the in-process tests' in-memory upstreams), with the same request
    /// checks and timeouts.
    pub fn with_exchange(timeouts: UpstreamConfig, exchange: Arc<dyn Exchange>) -> Self {
        Self { transport: Transport::Exchange(exchange), timeouts }
    }

    /// The configured timeouts.
    pub fn timeouts(&self) -> &UpstreamConfig {
        &self.timeouts
    }

    /// Sends one attempt and waits for the response head. `client` is the
    /// body the adapter mapped `request` from: a spliced body's client
    /// ranges are sent from it.
    pub async fn send(
        &self,
        base_url: &str,
        request: UpstreamRequest,
        client: &Bytes,
        auth: &AuthPlacement,
        key: Option<&str>,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let request = self.build(base_url, request, client, auth, key)?;
        let first_byte = self.timeouts.first_byte_timeout;
        match &self.transport {
            Transport::Http(client) => match tokio::time::timeout(first_byte, client.request(request)).await {
                Ok(Ok(inner)) => Ok(UpstreamResponse { inner: inner.map(ResponseBody::Http) }),
                Ok(Err(e)) if is_timeout(&e) => Err(UpstreamError::ConnectTimeout(self.timeouts.connect_timeout)),
                Ok(Err(e)) => Err(UpstreamError::Connect(error_chain(&e))),
                Err(_) => Err(UpstreamError::FirstByteTimeout(first_byte)),
            },
            Transport::Exchange(exchange) => match tokio::time::timeout(first_byte, exchange.exchange(request)).await {
                Ok(Ok(inner)) => Ok(UpstreamResponse { inner: inner.map(ResponseBody::Exchange) }),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(UpstreamError::FirstByteTimeout(first_byte)),
            },
        }
    }

    fn build(
        &self,
        base_url: &str,
        request: UpstreamRequest,
        client: &Bytes,
        auth: &AuthPlacement,
        key: Option<&str>,
    ) -> Result<http::Request<OutgoingBody>, UpstreamError> {
        check_path(&request.path)?;
        let body = UpstreamBody::assemble(request.body, client)
            .map_err(|e| UpstreamError::BadAdapterRequest(format!("invalid spliced body: {e}")))?;
        let mut target = format!("{base_url}{}", utf8_percent_encode(&request.path, PATH_ENCODE));
        let mut headers = HeaderMap::with_capacity(request.headers.len() + 1);
        let auth_header = match auth {
            AuthPlacement::Header(name) => Some(name.as_str()),
            _ => None,
        };
        for (name, value) in request.headers {
            // `from_bytes` lowers the name's case; the value keeps the
            // adapter's own bytes (no copy).
            let invalid = || UpstreamError::BadAdapterRequest(format!("invalid header {name:?}"));
            let parsed = HeaderName::from_bytes(name.as_bytes()).map_err(|_| invalid())?;
            if FORBIDDEN_HEADERS.contains(&parsed.as_str())
                || auth_header.is_some_and(|auth| auth.eq_ignore_ascii_case(parsed.as_str()))
            {
                continue;
            }
            let value = HeaderValue::from_maybe_shared(Bytes::from(value)).map_err(|_| invalid())?;
            headers.append(parsed, value);
        }
        if let Some(key) = key {
            let invalid = |_| UpstreamError::BadAdapterRequest("key is not a valid header value".into());
            match auth {
                AuthPlacement::None => {}
                AuthPlacement::Bearer => {
                    let mut v = joined_header_value(&["Bearer ", key]).map_err(invalid)?;
                    v.set_sensitive(true);
                    headers.insert(http::header::AUTHORIZATION, v);
                }
                AuthPlacement::Header(name) => {
                    let name = HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
                        .map_err(|_| UpstreamError::BadAdapterRequest(format!("invalid auth header name {name:?}")))?;
                    let mut v = HeaderValue::from_str(key).map_err(invalid)?;
                    v.set_sensitive(true);
                    headers.insert(name, v);
                }
                AuthPlacement::Query(name) => {
                    target.push(if target.contains('?') { '&' } else { '?' });
                    target.extend(utf8_percent_encode(name, QUERY_VALUE_ENCODE));
                    target.push('=');
                    target.extend(utf8_percent_encode(key, QUERY_VALUE_ENCODE));
                }
            }
        }
        let uri = Uri::try_from(target)
            .map_err(|e| UpstreamError::BadAdapterRequest(format!("bad path {:?}: {e}", request.path)))?;
        let method = match request.method {
            HttpMethod::Get => Method::GET,
            HttpMethod::Post => Method::POST,
        };
        let mut built = http::Request::new(OutgoingBody::from(body));
        *built.method_mut() = method;
        *built.uri_mut() = uri;
        *built.headers_mut() = headers;
        Ok(built)
    }

    /// Reads a whole (non-streaming) body, bounded in size and time.
    pub async fn read_body(&self, response: UpstreamResponse) -> Result<Bytes, UpstreamError> {
        if response.content_length().is_some_and(|len| len > MAX_RESPONSE_BYTES as u64) {
            return Err(UpstreamError::Body(format!("larger than {MAX_RESPONSE_BYTES} bytes")));
        }
        let read = async {
            let mut response = response;
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(|e| UpstreamError::Body(e.0))? {
                if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                    return Err(UpstreamError::Body(format!("larger than {MAX_RESPONSE_BYTES} bytes")));
                }
                if body.is_empty() {
                    body.reserve(chunk.len());
                }
                body.extend_from_slice(&chunk);
            }
            Ok(Bytes::from(body))
        };
        tokio::time::timeout(self.timeouts.stream_stall_timeout, read)
            .await
            .map_err(|_| UpstreamError::Body(format!("stalled for {:?}", self.timeouts.stream_stall_timeout)))?
    }
}

/// The response head as the adapter sees it (lower-case header names).
pub fn response_head(response: &UpstreamResponse) -> ResponseHead {
    ResponseHead {
        status: response.status().as_u16(),
        headers: response
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect(),
    }
}

/// A path must be relative to the base URL: starts with one `/`, and carries
/// no scheme, authority, `..` segment, fragment, backslash or control char.
fn check_path(path: &str) -> Result<(), UpstreamError> {
    let reject = |why: &str| Err(UpstreamError::BadAdapterRequest(format!("path {path:?} {why}")));
    if !path.starts_with('/') || path.starts_with("//") {
        return reject("must start with a single '/'");
    }
    if path.contains("://") || path.contains('@') {
        return reject("must not name a scheme or authority");
    }
    let route = path.split(['?', '#']).next().unwrap_or("");
    if route.split('/').any(|seg| seg == ".." || seg == "." || seg.eq_ignore_ascii_case("%2e%2e")) {
        return reject("must not contain dot segments");
    }
    if path.contains(['#', '\\']) || path.chars().any(|c| c.is_control() || c == ' ') {
        return reject("contains a forbidden character");
    }
    Ok(())
}

/// An error and its sources, joined with `: `.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use freellm_runtime::types::RequestBody;

    fn upstream() -> Upstream {
        Upstream::new(
            UpstreamConfig {
                connect_timeout: Duration::from_secs(1),
                first_byte_timeout: Duration::from_secs(1),
                stream_stall_timeout: Duration::from_secs(1),
                stream_idle_timeout: None,
                route_timeout: Duration::from_secs(1),
                stream_max_event_bytes: 1 << 20,
                stream_max_bytes: 1 << 26,
                stream_max_duration: Duration::from_secs(60),
                stream_continuation_max_bytes: 1 << 18,
            },
            None,
        )
        .unwrap()
    }

    fn request(path: &str, headers: &[(&str, &str)]) -> UpstreamRequest {
        UpstreamRequest {
            method: HttpMethod::Post,
            path: path.into(),
            headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            body: RequestBody::Bytes(b"{}".to_vec()),
        }
    }

    #[test]
    fn paths_that_escape_the_base_url_are_rejected() {
        for bad in ["chat", "//evil.com/x", "/x/../../admin", "http://evil/x", "/a@evil", "/a b", "/a\\b", "/x/./y"] {
            assert!(check_path(bad).is_err(), "{bad} accepted");
        }
        for good in ["/chat/completions", "/v1/models/gemini-2.5-flash:generate?alt=sse"] {
            assert!(check_path(good).is_ok(), "{good} rejected");
        }
    }

    #[test]
    fn adapter_auth_headers_are_dropped_and_the_key_injected() {
        let req = upstream()
            .build(
                "http://127.0.0.1:9/v1",
                request("/chat/completions", &[("Authorization", "Bearer stolen"), ("X-Extra", "1"), ("Host", "evil")]),
                &Bytes::new(),
                &AuthPlacement::Bearer,
                Some("k1"),
            )
            .unwrap();
        assert_eq!(req.uri().to_string(), "http://127.0.0.1:9/v1/chat/completions");
        assert_eq!(req.headers()["authorization"], "Bearer k1");
        assert_eq!(req.headers()["x-extra"], "1");
        assert!(req.headers().get("host").is_none());
    }

    #[test]
    fn header_and_query_placements_carry_the_key() {
        let u = upstream();
        let h = u
            .build(
                "http://h",
                request("/x", &[("X-Goog-Api-Key", "guest")]),
                &Bytes::new(),
                &AuthPlacement::Header("x-goog-api-key".into()),
                Some("k"),
            )
            .unwrap();
        assert_eq!(h.headers()["x-goog-api-key"], "k");
        assert_eq!(h.headers().get_all("x-goog-api-key").iter().count(), 1, "the adapter's own value is dropped");
        for bad in [("x-a", "line\nbreak"), ("bad name", "v"), ("", "v")] {
            let built = u.build("http://h", request("/x", &[bad]), &Bytes::new(), &AuthPlacement::None, None);
            assert!(matches!(built, Err(UpstreamError::BadAdapterRequest(_))), "{bad:?}");
        }
        let q = u
            .build(
                "http://h",
                request("/x?alt=sse", &[]),
                &Bytes::new(),
                &AuthPlacement::Query("key".into()),
                Some("a b"),
            )
            .unwrap();
        assert_eq!(q.uri().query(), Some("alt=sse&key=a%20b"));
        let plain = u
            .build("http://h", request("/x", &[]), &Bytes::new(), &AuthPlacement::Query("key".into()), Some("k&x=1"))
            .unwrap();
        assert_eq!(plain.uri().query(), Some("key=k%26x%3D1"), "the key cannot add parameters");
        let odd = u.build("http://h/v1", request("/models/é {x}:go", &[]), &Bytes::new(), &AuthPlacement::None, None);
        assert!(odd.is_err(), "a space is refused by the path check");
        let odd =
            u.build("http://h/v1", request("/models/é{x}:go", &[]), &Bytes::new(), &AuthPlacement::None, None).unwrap();
        assert_eq!(odd.uri().path(), "/v1/models/%C3%A9%7Bx%7D:go");
        let none = u.build("http://h", request("/x", &[]), &Bytes::new(), &AuthPlacement::None, None).unwrap();
        assert!(none.headers().get("authorization").is_none());
    }

    /// A spliced body goes out as its parts, the client's shared (not
    /// copied), with its exact length; one the host cannot assemble is
    /// refused as the adapter's request.
    #[tokio::test]
    async fn a_spliced_body_is_sent_as_parts_of_the_clients_bytes_or_refused() {
        use freellm_runtime::types::{BodyPiece, PieceSource, SplicedBody};
        let client = Bytes::from_static(br#"{"model":"free","messages":[{"role":"user","content":"long"}]}"#);
        let from = client.iter().position(|&b| b == b'[').unwrap();
        let written = br#"{"model":"m","messages":"#;
        let mut spliced = request("/chat", &[]);
        spliced.body = RequestBody::Spliced(SplicedBody {
            written: written.to_vec(),
            pieces: vec![
                BodyPiece { source: PieceSource::Adapter, start: 0, len: written.len() as u32 },
                BodyPiece { source: PieceSource::Client, start: from as u32, len: (client.len() - from) as u32 },
            ],
        });
        let u = upstream();
        let built = u.build("http://h", spliced.clone(), &client, &AuthPlacement::None, None).unwrap();
        let body = built.into_body();
        assert_eq!(http_body::Body::size_hint(&body).exact(), Some((written.len() + client.len() - from) as u64));
        let parts: Vec<Bytes> = body.parts.clone().collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[1].as_ptr(), client[from..].as_ptr(), "the client's part is its own buffer");
        let sent = body.collect().await.map(|b| b.to_bytes()).unwrap();
        assert_eq!(sent, Bytes::from_static(br#"{"model":"m","messages":[{"role":"user","content":"long"}]}"#));

        let short = Bytes::from_static(b"{}");
        let refused = u.build("http://h", spliced, &short, &AuthPlacement::None, None).unwrap_err();
        assert!(
            matches!(&refused, UpstreamError::BadAdapterRequest(m) if m.contains("invalid spliced body")),
            "{refused}"
        );
    }
}
