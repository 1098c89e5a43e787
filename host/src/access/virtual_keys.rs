//! Virtual sub-keys: credentials an operator hands out, each with a model
//! allowlist, an expiry and daily request and token caps.
//!
//! * **File.** `FREELLM_VIRTUAL_KEYS_PATH` holds `{"keys": [{"id",
//!   "label", "dailyRequestCap"?, "dailyTokenCap"?, "allowedModels"?,
//!   "expiresAt"?}]}` (the reference format). It is loaded at start (an
//!   invalid file refuses to boot), then watched: a change is reloaded
//!   without a restart, and an invalid new file is rejected with the error
//!   logged and shown in status while the previous keys stay in force.
//! * **Exact caps.** A request reserves its slot before it is routed
//!   ([`VirtualKeys::admit`]); the [`Ticket`] is settled with the real token
//!   use on success, and released when the route fails or the request is
//!   dropped, so failed routes never consume quota and concurrent requests
//!   can never overshoot the request cap. (Token use is only known after an
//!   answer, so a token cap admits requests while the tokens used so far are
//!   under it; the last admitted answers may take the total past it.)
//! * **Rolling 24 h** in one-minute buckets per key; usage survives restarts
//!   through the store ([`VirtualKeys::export_usage`], [`VirtualKeys::import_usage`]).
//! * **A fleet.** With a shared Redis ([`crate::fleet`]) the caps and usage
//!   are the fleet's: [`VirtualKeys::admit_in`] reserves the slot in Redis
//!   (one script), and the ticket's settle and release adjust it there.
//!   While Redis is unreachable `on_redis_error` decides: `closed` refuses
//!   ([`Refusal::SharedStateUnavailable`]), `open` decides from this
//!   instance's own window and keeps the count to merge later.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::OnRedisError;
use crate::fleet::Fleet;
use crate::fleet::caps::VirtualKeyVerdict;
use crate::fleet::deltas::{Counter, Delta};

/// Largest accepted file.
pub const MAX_FILE_BYTES: u64 = 1 << 20;
const DAY_MS: u64 = 86_400_000;
const MINUTE_MS: u64 = 60_000;

/// Why a virtual-keys file was refused.
#[derive(Debug, thiserror::Error)]
pub enum VirtualKeysError {
    /// The file could not be read.
    #[error("cannot read virtual keys file {path}: {message}")]
    Read { path: String, message: String },
    /// The file is not a valid keys file.
    #[error("invalid virtual keys file {path}: {message}")]
    Invalid { path: String, message: String },
}

/// One virtual key.
#[derive(Debug, Clone)]
pub struct VirtualKey {
    /// The full key (`sk-freellm-...`).
    pub id: String,
    /// Operator's label.
    pub label: String,
    /// Requests per rolling 24 h.
    pub daily_request_cap: Option<u64>,
    /// Tokens per rolling 24 h.
    pub daily_token_cap: Option<u64>,
    /// Model names this key may request (exact strings), or any.
    pub allowed_models: Option<Vec<String>>,
    /// Expiry as written.
    pub expires_at: Option<String>,
    /// Expiry in unix ms.
    pub expires_at_ms: Option<u64>,
}

impl VirtualKey {
    /// Whether the key has expired at `now_ms`.
    pub fn expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_some_and(|e| now_ms > e)
    }

    /// `sk-freellm-abcd...wxyz`: never the whole id.
    pub fn masked_id(&self) -> String {
        mask(&self.id)
    }

    /// The non-secret handle browser tokens carry (hex SHA-256 of the id).
    pub fn handle(&self) -> String {
        crate::access::tokens::key_handle(&self.id)
    }

    /// Whether `model` may be requested with this key.
    pub fn allows(&self, model: &str) -> bool {
        self.allowed_models.as_ref().is_none_or(|list| list.is_empty() || list.iter().any(|m| m == model))
    }
}

/// First 12 characters, `...`, last 4 (the whole id only when it is short).
pub fn mask(id: &str) -> String {
    let chars: Vec<char> = id.chars().collect();
    if chars.len() <= 16 {
        return format!("{}...", chars.iter().take(8).collect::<String>());
    }
    format!("{}...{}", chars[..12].iter().collect::<String>(), chars[chars.len() - 4..].iter().collect::<String>())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileKeys {
    keys: Vec<FileKey>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FileKey {
    id: String,
    label: String,
    daily_request_cap: Option<u64>,
    daily_token_cap: Option<u64>,
    allowed_models: Option<Vec<String>>,
    expires_at: Option<String>,
}

/// A loaded set of keys, looked up by the SHA-256 of the bearer.
#[derive(Debug, Default)]
pub struct KeySet {
    by_hash: HashMap<[u8; 32], Arc<VirtualKey>>,
}

impl KeySet {
    /// Parses and validates a keys file's text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: FileKeys = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let mut by_hash = HashMap::with_capacity(file.keys.len());
        for (i, k) in file.keys.into_iter().enumerate() {
            let at = |m: String| format!("keys[{i}]: {m}");
            let valid_id = k.id.len() >= 15
                && k.id.len() <= 139
                && k.id.starts_with("sk-freellm-")
                && k.id["sk-freellm-".len()..].chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !valid_id {
                return Err(at("id must match ^sk-freellm-[A-Za-z0-9_-]{4,128}$".into()));
            }
            if k.label.is_empty() || k.label.chars().count() > 128 {
                return Err(at("label must be 1-128 characters".into()));
            }
            if k.daily_request_cap == Some(0) || k.daily_token_cap == Some(0) {
                return Err(at("caps must be positive integers".into()));
            }
            if k.allowed_models.as_ref().is_some_and(|m| m.iter().any(String::is_empty)) {
                return Err(at("allowedModels entries must be non-empty".into()));
            }
            let expires_at_ms = match &k.expires_at {
                Some(text) => Some(parse_iso_utc(text).ok_or_else(|| {
                    at(format!("expiresAt {text:?} is not an ISO datetime in UTC (e.g. 2026-12-31T23:59:59Z)"))
                })?),
                None => None,
            };
            let hash: [u8; 32] = Sha256::digest(k.id.as_bytes()).into();
            let key = VirtualKey {
                id: k.id,
                label: k.label,
                daily_request_cap: k.daily_request_cap,
                daily_token_cap: k.daily_token_cap,
                allowed_models: k.allowed_models,
                expires_at: k.expires_at,
                expires_at_ms,
            };
            if by_hash.insert(hash, Arc::new(key)).is_some() {
                return Err(at("duplicate id".into()));
            }
        }
        Ok(Self { by_hash })
    }

    /// The key a bearer names, if any (looked up by hash).
    pub fn find(&self, bearer: &str) -> Option<&Arc<VirtualKey>> {
        let hash: [u8; 32] = Sha256::digest(bearer.as_bytes()).into();
        self.by_hash.get(&hash)
    }

    /// The key a handle ([`VirtualKey::handle`]) names, if any. Anything
    /// but 64 lowercase hex digits names no key (a raw key is not a handle).
    pub fn find_by_handle(&self, handle: &str) -> Option<&Arc<VirtualKey>> {
        if !crate::access::tokens::is_key_handle(handle) {
            return None;
        }
        let mut hash = [0u8; 32];
        hex::decode_to_slice(handle, &mut hash).ok()?;
        self.by_hash.get(&hash)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    /// True with no keys.
    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    /// Every key.
    pub fn keys(&self) -> impl Iterator<Item = &Arc<VirtualKey>> {
        self.by_hash.values()
    }

    /// Makes these keys the virtual keys the redactor looks for (replacing
    /// the previous file's).
    fn register_secrets(&self) {
        crate::redact::set_secrets("virtual-keys", self.keys().map(|k| k.id.as_str()));
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.fff]Z` → unix ms.
pub fn parse_iso_utc(text: &str) -> Option<u64> {
    let t = text.strip_suffix('Z').or_else(|| text.strip_suffix('z'))?;
    let (date, time) = t.split_once(['T', 't'])?;
    let mut d = date.split('-');
    let (y, m, day): (i64, u32, u32) = (d.next()?.parse().ok()?, d.next()?.parse().ok()?, d.next()?.parse().ok()?);
    if d.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&day) || date.len() != 10 {
        return None;
    }
    let (hms, frac) = match time.split_once('.') {
        Some((a, b)) if !b.is_empty() && b.chars().all(|c| c.is_ascii_digit()) => (a, b),
        Some(_) => return None,
        None => (time, ""),
    };
    let mut p = hms.split(':');
    let (hh, mm, ss): (u64, u64, u64) = (p.next()?.parse().ok()?, p.next()?.parse().ok()?, p.next()?.parse().ok()?);
    if p.next().is_some() || hh > 23 || mm > 59 || ss > 60 || hms.len() != 8 {
        return None;
    }
    let ms: u64 = frac.chars().chain("000".chars()).take(3).collect::<String>().parse().ok()?;
    // Days from civil (Howard Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let days = u64::try_from(days).ok()?;
    Some(days * DAY_MS + (hh * 3600 + mm * 60 + ss) * 1000 + ms)
}

/// Rolling 24 h usage of one key, in one-minute buckets, plus the requests
/// admitted but not yet finished.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageWindow {
    /// `(minute since epoch, requests, tokens)`, oldest first.
    buckets: VecDeque<(u64, u64, u64)>,
    #[serde(skip)]
    in_flight: u64,
}

impl UsageWindow {
    fn prune(&mut self, now_ms: u64) {
        let oldest = now_ms.saturating_sub(DAY_MS) / MINUTE_MS;
        while self.buckets.front().is_some_and(|(m, _, _)| *m <= oldest) {
            self.buckets.pop_front();
        }
    }

    fn record(&mut self, now_ms: u64, requests: u64, tokens: u64) {
        let minute = now_ms / MINUTE_MS;
        match self.buckets.back_mut() {
            Some((m, r, t)) if *m >= minute => {
                *r += requests;
                *t += tokens;
            }
            _ => self.buckets.push_back((minute, requests, tokens)),
        }
    }

    /// Requests and tokens in the window.
    pub fn totals(&self) -> (u64, u64) {
        self.buckets.iter().fold((0, 0), |(r, t), (_, br, bt)| (r + br, t + bt))
    }
}

/// Why a virtual key may not make this request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Past its expiry.
    Expired,
    /// The model is not in its allowlist.
    ModelNotAllowed,
    /// The request cap is reached.
    RequestCap(u64),
    /// The token cap is reached.
    TokenCap(u64),
    /// The fleet's shared state cannot be reached and caps fail closed.
    SharedStateUnavailable,
}

/// Every loaded virtual key, the file they came from, and their usage.
pub struct VirtualKeys {
    path: Option<PathBuf>,
    set: ArcSwap<KeySet>,
    usage: Mutex<HashMap<String, Arc<Mutex<UsageWindow>>>>,
    last_error: Mutex<Option<String>>,
}

impl VirtualKeys {
    /// No keys.
    pub fn none() -> Self {
        Self::with_set(None, KeySet::default())
    }

    fn with_set(path: Option<PathBuf>, set: KeySet) -> Self {
        set.register_secrets();
        Self { path, set: ArcSwap::from_pointee(set), usage: Mutex::new(HashMap::new()), last_error: Mutex::new(None) }
    }

    /// Loads the keys file (an error refuses to boot).
    pub fn load(path: &Path) -> Result<Self, VirtualKeysError> {
        let set = read_file(path)?;
        Ok(Self::with_set(Some(path.to_path_buf()), set))
    }

    /// The current keys.
    pub fn current(&self) -> Arc<KeySet> {
        self.set.load_full()
    }

    /// The file, when keys come from one.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The last reload's error, if the last reload failed.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Re-reads the file: a valid file replaces the keys; an invalid one is
    /// refused and the previous keys stay in force.
    pub fn reload(&self) -> Result<usize, VirtualKeysError> {
        let Some(path) = &self.path else { return Ok(0) };
        let mut last = self.last_error.lock().unwrap_or_else(|e| e.into_inner());
        match read_file(path) {
            Ok(set) => {
                let n = set.len();
                set.register_secrets();
                self.set.store(Arc::new(set));
                *last = None;
                tracing::info!(path = %path.display(), keys = n, "virtual keys reloaded");
                Ok(n)
            }
            Err(e) => {
                tracing::error!(error = %e, "virtual keys file rejected; the previous keys stay in force");
                // Shown in status; a parse error may quote the file.
                *last = Some(crate::redact::redact(&e.to_string()).into_owned());
                Err(e)
            }
        }
    }

    fn window(&self, id: &str) -> Arc<Mutex<UsageWindow>> {
        let mut usage = self.usage.lock().unwrap_or_else(|e| e.into_inner());
        usage.entry(id.to_owned()).or_default().clone()
    }

    /// Checks expiry, allowlist and caps, and reserves one request. The
    /// ticket must be settled on success; dropping it releases the slot.
    pub fn admit(&self, key: &Arc<VirtualKey>, model: &str, now_ms: u64) -> Result<Ticket, Refusal> {
        if key.expired(now_ms) {
            return Err(Refusal::Expired);
        }
        if !key.allows(model) {
            return Err(Refusal::ModelNotAllowed);
        }
        let window = self.window(&key.id);
        let mut w = window.lock().unwrap_or_else(|e| e.into_inner());
        w.prune(now_ms);
        let (requests, tokens) = w.totals();
        if let Some(cap) = key.daily_request_cap
            && requests + w.in_flight >= cap
        {
            return Err(Refusal::RequestCap(cap));
        }
        if let Some(cap) = key.daily_token_cap
            && tokens >= cap
        {
            return Err(Refusal::TokenCap(cap));
        }
        w.in_flight += 1;
        drop(w);
        Ok(Ticket { window: Some(window), shared: None })
    }

    /// [`VirtualKeys::admit`] for a gateway in `fleet`: with Redis the
    /// fleet's caps decide (one script); locally, exactly `admit`.
    pub async fn admit_in(
        &self,
        fleet: &Arc<Fleet>,
        key: &Arc<VirtualKey>,
        model: &str,
        now_ms: u64,
    ) -> Result<Ticket, Refusal> {
        if fleet.shared().is_none() {
            return self.admit(key, model, now_ms);
        }
        if key.expired(now_ms) {
            return Err(Refusal::Expired);
        }
        if !key.allows(model) {
            return Err(Refusal::ModelNotAllowed);
        }
        let handle = key.handle();
        match fleet.admit_virtual_key(&handle, key.daily_request_cap, key.daily_token_cap).await {
            Ok(VirtualKeyVerdict::Admitted { bucket }) => Ok(Ticket {
                window: None,
                shared: Some(SharedTicket { fleet: fleet.clone(), handle, bucket: Some(bucket) }),
            }),
            Ok(VirtualKeyVerdict::RequestCap) => Err(Refusal::RequestCap(key.daily_request_cap.unwrap_or_default())),
            Ok(VirtualKeyVerdict::TokenCap) => Err(Refusal::TokenCap(key.daily_token_cap.unwrap_or_default())),
            Err(_) => match fleet.on_redis_error() {
                OnRedisError::Closed => Err(Refusal::SharedStateUnavailable),
                OnRedisError::Open => {
                    let mut ticket = self.admit(key, model, now_ms)?;
                    ticket.shared = Some(SharedTicket { fleet: fleet.clone(), handle, bucket: None });
                    Ok(ticket)
                }
            },
        }
    }

    /// `(requests, tokens)` of a key in the rolling 24 h: the fleet's when
    /// it shares state and Redis answers, else this instance's.
    pub async fn usage_in(&self, fleet: &Fleet, key: &VirtualKey, now_ms: u64) -> (u64, u64) {
        if fleet.shared().is_some()
            && let Ok(usage) = fleet.virtual_key_usage(&key.handle()).await
        {
            return usage;
        }
        self.usage_of(&key.id, now_ms)
    }

    /// `(requests, tokens)` of a key in the rolling 24 h.
    pub fn usage_of(&self, id: &str, now_ms: u64) -> (u64, u64) {
        let window = self.window(id);
        let mut w = window.lock().unwrap_or_else(|e| e.into_inner());
        w.prune(now_ms);
        w.totals()
    }

    /// Every key's window, for the persistent store.
    pub fn export_usage(&self) -> Vec<(String, UsageWindow)> {
        let usage = self.usage.lock().unwrap_or_else(|e| e.into_inner());
        usage.iter().map(|(id, w)| (id.clone(), w.lock().unwrap_or_else(|e| e.into_inner()).clone())).collect()
    }

    /// Restores windows saved by [`export_usage`](Self::export_usage).
    pub fn import_usage(&self, saved: Vec<(String, UsageWindow)>) {
        let mut usage = self.usage.lock().unwrap_or_else(|e| e.into_inner());
        for (id, mut w) in saved {
            w.in_flight = 0;
            usage.insert(id, Arc::new(Mutex::new(w)));
        }
    }

    /// Watches the file (its directory, so editors' atomic replaces are
    /// seen) and reloads on change, debounced. The returned watcher must be
    /// kept alive.
    pub fn watch(self: &Arc<Self>) -> Option<notify::RecommendedWatcher> {
        use notify::{RecursiveMode, Watcher};
        let path = self.path.clone()?;
        let dir =
            path.parent().map(Path::to_path_buf).filter(|d| !d.as_os_str().is_empty()).unwrap_or_else(|| ".".into());
        let name = path.file_name().map(|n| n.to_os_string());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if let Ok(event) = event
                && event.paths.iter().any(|p| p.file_name().map(|n| n.to_os_string()) == name)
            {
                let _ = tx.send(());
            }
        })
        .map_err(|e| tracing::error!(error = %e, "cannot watch the virtual keys file"))
        .ok()?;
        if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
            tracing::error!(error = %e, dir = %dir.display(), "cannot watch the virtual keys file");
            return None;
        }
        let keys = self.clone();
        tokio::spawn(async move {
            while rx.recv().await.is_some() {
                // Debounce: editors write in several steps.
                tokio::time::sleep(Duration::from_millis(150)).await;
                while rx.try_recv().is_ok() {}
                let _ = keys.reload();
            }
        });
        Some(watcher)
    }
}

/// A reserved request of a virtual key.
#[derive(Debug)]
pub struct Ticket {
    window: Option<Arc<Mutex<UsageWindow>>>,
    shared: Option<SharedTicket>,
}

/// The fleet's side of a ticket.
#[derive(Debug)]
struct SharedTicket {
    fleet: Arc<Fleet>,
    handle: String,
    /// The bucket Redis counted the request in; `None`: admitted from local
    /// state while degraded, so the whole request is merged later.
    bucket: Option<i64>,
}

impl Ticket {
    /// The request succeeded with `tokens` used: it counts.
    pub fn settle(mut self, now_ms: u64, tokens: u64) {
        if let Some(window) = self.window.take() {
            let mut w = window.lock().unwrap_or_else(|e| e.into_inner());
            w.in_flight = w.in_flight.saturating_sub(1);
            w.record(now_ms, 1, tokens);
        }
        if let Some(SharedTicket { fleet, handle, bucket }) = self.shared.take() {
            let tokens = i64::try_from(tokens).unwrap_or(i64::MAX);
            match bucket {
                // Counted at admission; the tokens go to the current bucket.
                Some(_) if tokens > 0 => fleet.adjust_virtual_key(handle, None, Delta { requests: 0, tokens }),
                Some(_) => {}
                None => fleet.keep_delta(Counter::VirtualKey(handle), Delta { requests: 1, tokens }),
            }
        }
    }
}

impl Drop for Ticket {
    /// Not settled: the request failed or was dropped, its slot is freed.
    fn drop(&mut self) {
        if let Some(window) = self.window.take() {
            let mut w = window.lock().unwrap_or_else(|e| e.into_inner());
            w.in_flight = w.in_flight.saturating_sub(1);
        }
        if let Some(SharedTicket { fleet, handle, bucket: Some(bucket) }) = self.shared.take() {
            fleet.adjust_virtual_key(handle, Some(bucket), Delta { requests: -1, tokens: 0 });
        }
    }
}

fn read_file(path: &Path) -> Result<KeySet, VirtualKeysError> {
    let shown = path.display().to_string();
    let meta =
        std::fs::metadata(path).map_err(|e| VirtualKeysError::Read { path: shown.clone(), message: e.to_string() })?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(VirtualKeysError::Invalid { path: shown, message: format!("larger than {MAX_FILE_BYTES} bytes") });
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| VirtualKeysError::Read { path: shown.clone(), message: e.to_string() })?;
    KeySet::parse(&text).map_err(|message| VirtualKeysError::Invalid { path: shown, message })
}

#[cfg(test)]
mod tests;
