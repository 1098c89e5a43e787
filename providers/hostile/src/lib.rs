//! A deliberately hostile adapter for the host's sandbox tests. It behaves
//! by upstream model: `loop` spins forever, `grow` allocates memory without
//! bound, `peek` reads the byte just past the end of its linear memory,
//! `panic` panics, `remember` keeps a count of its calls in a global
//! (the state an adapter must not keep) and sends it upstream as
//! `x-hostile-calls`, `splice-outside` returns a spliced body with a range
//! past the client's body, `splice-many` one of more pieces than the host
//! takes, and `ok` is a well-behaved OpenAI-compatible mapping.
//! With the setting `normalize = "panic"` it also panics while
//! normalizing an answer, i.e. after the upstream call. With the setting
//! `fail_configure_after_ms` (a Unix time in milliseconds) every
//! `configure` from that time on fails, refused or, with
//! `fail_configure = "panic"`, by a panic: the load's configure passes and
//! the instances made later fail theirs. Its stream
//! normalizer panics on an event whose data holds `hostile-panic` (the
//! streams sharing its instance lose it too). Never deploy it.

#![warn(missing_docs)]

use std::hint::black_box;
use std::sync::atomic::{AtomicU32, Ordering};

use freellm_sdk::openai_compat;
use freellm_sdk::{
    Adapter, AdapterInfo, AuthPlacement, BodyPiece, CallContext, Capabilities, ChatRequest, Failure, ModelInfo,
    ModelTags, NormalizedResponse, PassthroughStream, PieceSource, PrivacyInfo, PrivacyPolicy, RateLimits, RequestBody,
    ResponseHead, Settings, SplicedBody, StreamEvent, StreamFraming, StreamNormalizer, StreamOutput, UpstreamRequest,
    WireFormat,
};

/// The hostile adapter.
pub struct Hostile;

impl Adapter for Hostile {
    fn configure(settings: &Settings) -> Result<AdapterInfo, String> {
        let setting = |key: &str| freellm_sdk::setting(settings, key);
        if let Some(after) = setting("fail_configure_after_ms").and_then(|ms| ms.parse::<u128>().ok()) {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
            if now >= after {
                if setting("fail_configure") == Some("panic") {
                    panic!("hostile adapter panicked on purpose while configuring");
                }
                return Err("hostile adapter refuses its settings on purpose".into());
            }
        }
        Ok(AdapterInfo {
            id: "hostile".into(),
            display_name: "Hostile".into(),
            adapter_version: env!("CARGO_PKG_VERSION").into(),
            default_base_url: "http://127.0.0.1:9/v1".into(),
            key_env: Some("HOSTILE_API_KEY".into()),
            auth: AuthPlacement::Bearer,
            stream_framing: StreamFraming::Sse,
            wire_format: WireFormat::OpenaiChat,
            capabilities: Capabilities::empty(),
            models: ["ok", "loop", "grow", "peek", "panic", "remember", "splice-outside", "splice-many"]
                .map(|id| ModelInfo::new(id, 0, ModelTags::empty()))
                .into(),
            default_model: "ok".into(),
            privacy: PrivacyInfo {
                policy: PrivacyPolicy::Local,
                source_url: "https://example.com/freellm-hostile-test-component".into(),
                last_verified: "2026-04-09".into(),
                note: "A test component that never reaches a real provider.".into(),
            },
            limits: RateLimits {
                requests_per_minute: None,
                requests_per_day: None,
                tokens_per_minute: None,
                tokens_per_day: None,
                shared_per_project: false,
            },
        })
    }

    fn map_request(ctx: &CallContext, req: ChatRequest) -> Result<UpstreamRequest, Failure> {
        match ctx.upstream_model.as_str() {
            "loop" => spin(),
            "grow" => hoard(),
            "peek" => peek(),
            "panic" => panic!("hostile adapter panicked on purpose"),
            "remember" => {
                let calls = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
                let mut up = openai_compat::map_request(ctx, req, &[])?;
                up.headers.push(("x-hostile-calls".into(), calls.to_string()));
                Ok(up)
            }
            "splice-outside" => {
                let mut up = openai_compat::map_request(ctx, req, &[])?;
                let piece = BodyPiece { source: PieceSource::Client, start: u32::MAX - 4, len: 16 };
                up.body = RequestBody::Spliced(SplicedBody { written: Vec::new(), pieces: vec![piece] });
                Ok(up)
            }
            "splice-many" => {
                let mut up = openai_compat::map_request(ctx, req, &[])?;
                let piece = BodyPiece { source: PieceSource::Adapter, start: 0, len: 1 };
                up.body = RequestBody::Spliced(SplicedBody { written: b"{".to_vec(), pieces: vec![piece; 5_000] });
                Ok(up)
            }
            _ => openai_compat::map_request(ctx, req, &[]),
        }
    }

    fn normalize_response(ctx: &CallContext, head: &ResponseHead, body: &[u8]) -> Result<NormalizedResponse, Failure> {
        let _ = ctx;
        if freellm_sdk::settings::instance_setting("normalize").as_deref() == Some("panic") {
            panic!("hostile adapter panicked on purpose while normalizing");
        }
        openai_compat::normalize_response(ctx, head, body)
    }

    fn stream_normalizer(_ctx: &CallContext, _head: &ResponseHead) -> Box<dyn StreamNormalizer> {
        Box::new(PanickingStream(PassthroughStream::default()))
    }
}

/// Forwards OpenAI chunks, and panics on an event holding `hostile-panic`.
struct PanickingStream(PassthroughStream);

impl StreamNormalizer for PanickingStream {
    fn push(&mut self, events: Vec<StreamEvent>) -> Result<StreamOutput, Failure> {
        if events.iter().any(|e| e.data.contains("hostile-panic")) {
            panic!("hostile adapter panicked on purpose while normalizing a stream");
        }
        self.0.push(events)
    }

    fn finish(&mut self) -> Result<StreamOutput, Failure> {
        self.0.finish()
    }
}

/// `map-request` calls of model `remember` this instance has served.
static CALLS: AtomicU32 = AtomicU32::new(0);

/// Burns CPU forever; `black_box` keeps the optimizer from removing it.
fn spin() -> ! {
    let mut counter = 0_u64;
    loop {
        counter = black_box(counter).wrapping_add(1);
    }
}

/// Allocates and touches 1 MiB blocks forever (until the sandbox's memory
/// limit turns the next allocation into a trap).
fn hoard() -> ! {
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    loop {
        blocks.push(vec![0xA5; 1 << 20]);
        black_box(&mut blocks);
    }
}

/// Reads the first byte past the end of this instance's linear memory:
/// the sandbox must trap (a guard page or a bounds check), never return
/// what lies there.
#[cfg(target_arch = "wasm32")]
fn peek() -> ! {
    let end = core::arch::wasm32::memory_size(0) * 65536;
    // SAFETY: none; this adapter is hostile on purpose. In WebAssembly an
    // access outside linear memory traps, which is what the host's sandbox
    // tests expect.
    let byte = unsafe { core::ptr::read_volatile(black_box(end) as *const u8) };
    panic!("read past the end of linear memory without a trap: {byte}")
}

/// A native build (the crate's unit tests) has no linear memory to read past.
#[cfg(not(target_arch = "wasm32"))]
fn peek() -> ! {
    panic!("peek reads past the end of linear memory, which only a WebAssembly build has")
}

freellm_sdk::export_adapter!(Hostile);
