//! Relaying a streaming answer: upstream bytes → framer (host) → the
//! adapter's stream normalizer (wasm) → `data: <chunk>` events to the client.
//!
//! The relay runs in its own task and hands finished SSE bytes to the
//! response body through a small channel; a client that goes away closes the
//! channel and the task stops reading upstream. While the upstream is silent
//! the client gets `: keep-alive` comments (after `STREAM_IDLE_TIMEOUT_MS`);
//! past `STREAM_STALL_TIMEOUT_MS` of silence the stream is cut. A stream that
//! breaks off ends with an OpenAI-style error event and no `[DONE]`, so no
//! client mistakes a truncated answer for a complete one.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use tokio::sync::mpsc;
use tokio::time::timeout_at;

use crate::config::UpstreamConfig;
use crate::error::ApiError;
use crate::plugins::types::{CallContext, ResponseHead, StreamEvent, StreamFraming, StreamOutput};
use crate::plugins::{Adapter, StreamSession};
use crate::sse::Framer;

/// Everything needed to start relaying one committed stream.
pub struct StreamStart {
    /// The adapter version that mapped the request.
    pub adapter: Arc<Adapter>,
    /// Call context for the normalizer.
    pub ctx: CallContext,
    /// The upstream's 2xx head.
    pub head: ResponseHead,
    /// The upstream response (body not yet read).
    pub response: reqwest::Response,
    /// How the upstream frames events.
    pub framing: StreamFraming,
    /// Stall and idle timeouts.
    pub timeouts: UpstreamConfig,
    /// For log lines and error events.
    pub request_id: String,
    /// Provider id.
    pub provider: Arc<str>,
}

/// Opens the adapter's normalizer, then commits: returns the SSE response
/// whose body the relay task feeds. An adapter fault here still allows
/// failover, since nothing has reached the client yet.
pub async fn start(s: StreamStart) -> Result<Response, ApiError> {
    let session = s.adapter.open_stream(&s.ctx, &s.head).await.map_err(|fault| ApiError::AdapterFault {
        provider: s.provider.to_string(),
        message: fault.to_string(),
    })?;
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let relay = Relay {
        session,
        response: s.response,
        framer: Framer::new(s.framing),
        timeouts: s.timeouts,
        request_id: s.request_id,
        provider: s.provider,
        tx,
    };
    tokio::spawn(relay.run());
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|bytes| (Ok::<_, Infallible>(bytes), rx))
    });
    let mut response = Body::from_stream(body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// Why a committed stream could not complete.
enum Cut {
    /// The client went away; nothing more to say.
    ClientGone,
    /// The stream failed; tell the client with an error event.
    Failed { code: &'static str, message: String },
}

struct Relay {
    session: StreamSession,
    response: reqwest::Response,
    framer: Framer,
    timeouts: UpstreamConfig,
    request_id: String,
    provider: Arc<str>,
    tx: mpsc::Sender<Bytes>,
}

impl Relay {
    async fn run(mut self) {
        let started = Instant::now();
        let result = self.relay().await;
        match result {
            Ok(()) => {
                tracing::info!(request_id = %self.request_id, provider = %self.provider,
                    latency_ms = started.elapsed().as_millis() as u64, "stream completed");
            }
            Err(Cut::ClientGone) => {
                tracing::info!(request_id = %self.request_id, provider = %self.provider, "client closed the stream");
            }
            Err(Cut::Failed { code, message }) => {
                tracing::warn!(request_id = %self.request_id, provider = %self.provider, code, error = %message, "stream cut");
                let event = serde_json::json!({ "error": {
                    "type": "provider_error",
                    "code": code,
                    "message": message,
                    "request_id": self.request_id,
                    "provider": self.provider.as_ref(),
                }});
                let _ = self.tx.send(Bytes::from(format!("data: {event}\n\n"))).await;
            }
        }
    }

    async fn relay(&mut self) -> Result<(), Cut> {
        let mut events: Vec<StreamEvent> = Vec::new();
        let mut finished = false;
        let mut last_data = Instant::now();
        loop {
            let stall_at = last_data + self.timeouts.stream_stall_timeout;
            let wake_at = match self.timeouts.stream_idle_timeout {
                Some(idle) => (Instant::now() + idle).min(stall_at),
                None => stall_at,
            };
            let chunk = match timeout_at(wake_at.into(), self.response.chunk()).await {
                Ok(Ok(Some(chunk))) => chunk,
                Ok(Ok(None)) => break,
                Ok(Err(e)) => {
                    return Err(Cut::Failed {
                        code: "stream_interrupted",
                        message: format!("the upstream stream broke off: {e}"),
                    });
                }
                Err(_) if Instant::now() >= stall_at => {
                    return Err(Cut::Failed {
                        code: "stream_stalled",
                        message: format!("the upstream sent nothing for {:?}", self.timeouts.stream_stall_timeout),
                    });
                }
                Err(_) => {
                    self.send(Bytes::from_static(b": keep-alive\n\n")).await?;
                    continue;
                }
            };
            last_data = Instant::now();
            self.framer.push(&chunk, &mut events).map_err(|e| Cut::Failed {
                code: "stream_malformed",
                message: e.to_string(),
            })?;
            if events.is_empty() {
                continue;
            }
            let output = self.normalize(&events, false).await?;
            events.clear();
            finished |= output.finish_reason.is_some();
            let done = output.done;
            self.emit(output).await?;
            if done {
                return self.send(Bytes::from_static(b"data: [DONE]\n\n")).await;
            }
        }
        // Upstream EOF without a [DONE]: flush what is buffered.
        self.framer.finish(&mut events);
        if !events.is_empty() {
            let output = self.normalize(&events, false).await?;
            finished |= output.finish_reason.is_some() || output.done;
            self.emit(output).await?;
        }
        let output = self.normalize(&[], true).await?;
        finished |= output.finish_reason.is_some() || output.done;
        self.emit(output).await?;
        if finished {
            self.send(Bytes::from_static(b"data: [DONE]\n\n")).await
        } else {
            Err(Cut::Failed {
                code: "stream_incomplete",
                message: "the upstream stream ended before the answer was complete".into(),
            })
        }
    }

    async fn normalize(&mut self, events: &[StreamEvent], finish: bool) -> Result<StreamOutput, Cut> {
        let result = if finish { self.session.finish().await } else { self.session.push(events).await };
        match result {
            Ok(Ok(output)) => Ok(output),
            Ok(Err(failure)) => Err(Cut::Failed { code: "stream_failed", message: failure.message }),
            Err(fault) => Err(Cut::Failed { code: "adapter_fault", message: fault.to_string() }),
        }
    }

    /// Writes one batch of chunks as SSE events in a single body frame.
    async fn emit(&mut self, output: StreamOutput) -> Result<(), Cut> {
        if output.chunks.is_empty() {
            return Ok(());
        }
        let size: usize = output.chunks.iter().map(|c| c.len() + 8).sum();
        let mut buf = Vec::with_capacity(size);
        for chunk in output.chunks {
            buf.extend_from_slice(b"data: ");
            buf.extend_from_slice(&chunk);
            buf.extend_from_slice(b"\n\n");
        }
        self.send(Bytes::from(buf)).await
    }

    async fn send(&mut self, bytes: Bytes) -> Result<(), Cut> {
        self.tx.send(bytes).await.map_err(|_| Cut::ClientGone)
    }
}
