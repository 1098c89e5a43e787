//! The adapter admin API: `GET /v1/plugins` (every adapter: version, hash,
//! state, last error, calls, traps, time inside the component),
//! `POST /v1/plugins/reload` (all, or `{"id": "<provider>"}`),
//! `POST /v1/plugins/{id}/reload` (one provider; `?source=file` lifts an
//! upload's pin and loads the component file) and
//! `POST /v1/plugins/{id}` (upload a component, checked like a changed file;
//! `?canary=N` puts it on trial for N % of the traffic, once it passed
//! validation) and
//! `POST /v1/plugins/{id}/canary` (`{"percent": N}`: the share new versions
//! of that provider get; 0 = swap at once).

use std::sync::atomic::Ordering;
use std::time::UNIX_EPOCH;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use serde_json::{Value, json};

use crate::http::error::ApiError;
use crate::ops::reload::Reloader;
use crate::ops::stats::iso8601;
use crate::providers::ProviderEntry;
use crate::state::SharedGateway;
use freellm_runtime::Adapter;

fn version_json(a: &Adapter, plugins: &Reloader) -> Value {
    let stats = &a.stats;
    let loaded_ms = a.loaded_at.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    json!({
        "version": a.info.adapter_version,
        "hash": a.hash,
        // `file` (the component in plugins.toml) or `upload`.
        "source": plugins.source_of(&a.id, &a.hash).as_str(),
        "contract": a.contract().package(),
        "wire_format": a.info.wire_format.name(),
        "loaded_at": iso8601(loaded_ms),
        "calls": stats.calls.load(Ordering::Relaxed),
        "traps": stats.faults.load(Ordering::Relaxed),
        "busy_ms": stats.busy_nanos.load(Ordering::Relaxed) / 1_000_000,
        "p50_us": stats.latency.quantile(0.5),
        "p99_us": stats.latency.quantile(0.99),
    })
}

fn plugin_json(p: &ProviderEntry, plugins: &Reloader) -> Value {
    let rejections = plugins.rejections();
    let rejection = rejections.get(&*p.id);
    let state = match (&p.adapter, p.enabled, &p.canary) {
        (None, _, _) => "failed",
        (Some(_), _, Some(_)) => "canary",
        (Some(_), true, None) => "active",
        (Some(_), false, None) => "disabled",
    };
    let mut v = json!({
        "id": p.id.as_ref(),
        "component": p.config.component.display().to_string(),
        "state": state,
        "enabled": p.enabled,
        "note": p.note,
        "last_error": rejection,
        // The upload that pins this slot (until `reload?source=file`).
        "pinned_upload": plugins.pin(&p.id).map(|pin| json!({ "hash": pin.hash, "file": pin.file })),
        "sandbox": {
            "memory_mb": p.config.sandbox.memory_bytes >> 20,
            "cpu_ms": p.config.sandbox.cpu_time.as_millis() as u64,
            "reuse_instances": p.config.sandbox.reuse_instances,
            "warm_instances": p.adapter.as_ref().map_or(0, |a| a.warm_instances()),
            // Instances holding the open streams (several streams each).
            "stream_hosts": p.adapter.as_ref().map_or(0, |a| a.stream_hosts()),
        },
    });
    if let (Some(a), Some(obj)) = (&p.adapter, v.as_object_mut())
        && let Value::Object(fields) = version_json(a, plugins)
    {
        obj.extend(fields);
    }
    if let (Some(c), Some(obj)) = (&p.canary, v.as_object_mut()) {
        let load = |x: &std::sync::atomic::AtomicU64| x.load(Ordering::Relaxed);
        obj.insert(
            "canary".into(),
            json!({
                "percent": c.percent,
                "candidate": version_json(&c.adapter, plugins),
                "candidate_calls": load(&c.new.0),
                "candidate_failures": load(&c.new.1),
                "current_calls": load(&c.old.0),
                "current_failures": load(&c.old.1),
            }),
        );
    }
    v
}

/// `GET /v1/plugins`.
pub async fn list(State(gw): State<SharedGateway>) -> Json<Value> {
    let registry = gw.registry.load();
    let plugins: Vec<Value> = registry.providers.iter().map(|p| plugin_json(p, &gw.plugins)).collect();
    Json(json!({ "plugins": plugins, "events": gw.plugins.events(), "reloads": gw.plugins.reload_count() }))
}

/// `POST /v1/plugins/reload`, optionally `{"id": "<provider>"}`: each
/// provider's outcome, the settings applied (`applied`) and those that
/// need a restart (`restart_needed`), by file key.
pub async fn reload(State(gw): State<SharedGateway>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let only = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        let v: Value =
            serde_json::from_slice(&body).map_err(|e| ApiError::invalid_body(format!("malformed JSON: {e}")))?;
        match v.get("id") {
            None | Some(Value::Null) => None,
            Some(Value::String(id)) => Some(id.clone()),
            Some(_) => return Err(ApiError::invalid_body("\"id\" must be a provider id")),
        }
    };
    let reloaded = gw.plugins.reload_report(only.as_deref()).await.map_err(|message| match &only {
        Some(id) if message.starts_with("no provider") => ApiError::ProviderNotFound { id: id.clone() },
        _ => ApiError::invalid_body(message),
    })?;
    Ok(Json(json!(reloaded)))
}

/// Query of `POST /v1/plugins/{id}/reload`.
#[derive(serde::Deserialize)]
pub struct ReloadQuery {
    /// `file`: lift an upload's pin and load the component file.
    source: Option<String>,
}

/// `POST /v1/plugins/{id}/reload`: reloads one provider; with
/// `?source=file`, from its component file even while an upload pins it.
pub async fn reload_one(
    State(gw): State<SharedGateway>,
    Path(id): Path<String>,
    Query(query): Query<ReloadQuery>,
) -> Result<Json<Value>, ApiError> {
    let from_file = match query.source.as_deref() {
        None => false,
        Some("file") => true,
        Some(other) => {
            return Err(ApiError::invalid_body(format!("source must be \"file\" (or omitted), got {other:?}")));
        }
    };
    let result = if from_file { gw.plugins.reload_from_file(&id).await } else { gw.plugins.reload(Some(&id)).await };
    let outcomes = result.map_err(|message| {
        if message.starts_with("no provider") {
            ApiError::ProviderNotFound { id: id.clone() }
        } else {
            ApiError::invalid_body(message)
        }
    })?;
    Ok(Json(json!({ "outcomes": outcomes })))
}

/// Query of an upload.
#[derive(serde::Deserialize)]
pub struct UploadQuery {
    /// Put the upload on trial for this share of the traffic.
    canary: Option<u8>,
}

/// `POST /v1/plugins/{id}/canary` with `{"percent": 0..=99}`.
pub async fn set_canary(
    State(gw): State<SharedGateway>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let v: Value = serde_json::from_slice(&body).map_err(|e| ApiError::invalid_body(format!("malformed JSON: {e}")))?;
    let percent = v
        .get("percent")
        .and_then(Value::as_u64)
        .filter(|p| *p < 100)
        .ok_or_else(|| ApiError::invalid_body("expected {\"percent\": 0..=99}"))?;
    if gw.registry.load().get(&id).is_none() {
        return Err(ApiError::ProviderNotFound { id });
    }
    gw.plugins.set_canary(&id, percent as u8);
    Ok(Json(json!({ "id": id, "canary_percent": percent })))
}

/// `POST /v1/plugins/{id}` with the component bytes as the body.
pub async fn upload(
    State(gw): State<SharedGateway>,
    Path(id): Path<String>,
    Query(query): Query<UploadQuery>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    if query.canary.is_some_and(|percent| percent >= 100) {
        return Err(ApiError::invalid_body("canary must be a percentage between 0 and 99"));
    }
    // The edge already cut bodies past the limit while reading them.
    let limit = gw.config.edge.max_upload_bytes;
    if body.len() > limit {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    if body.is_empty() {
        return Err(ApiError::invalid_body("the body must be a WebAssembly component"));
    }
    let outcomes = gw.plugins.upload(&id, &body, query.canary).await.map_err(|message| {
        if message.starts_with("no provider") {
            ApiError::ProviderNotFound { id: id.clone() }
        } else {
            ApiError::Internal(message)
        }
    })?;
    Ok(Json(json!({ "outcomes": outcomes })))
}
