//! `GET /v1/status` (the reference's field names: providers, keys, breakers,
//! usage, recent requests), `PATCH /v1/status/routing` (switch strategy;
//! answers the full status object, as the reference does) and
//! `POST /v1/status/providers/{id}/reset` (close the breaker, clear key
//! cooldowns and invalid marks; answers that provider's status object
//! without `privacy`, as the reference does).

use std::time::{Instant, SystemTime};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::{Extension, Json};
use serde_json::{Value, json};

use crate::access::auth::Principal;
use crate::http::error::ApiError;
use crate::ops::events::Event;
use crate::ops::stats::{UsageTotals, iso8601, unix_ms};
use crate::providers::ProviderEntry;
use crate::routing::router::{Strategy, privacy_name};
use crate::state::{Gateway, SharedGateway};

/// Recent requests shown.
const RECENT: usize = 50;

/// The gateway's state at a glance, plus what the caller may do
/// (`access`: its role and whether it may call admin endpoints).
pub async fn status(State(gw): State<SharedGateway>, principal: Option<Extension<Principal>>) -> Json<Value> {
    let mut status = status_snapshot(&gw).await;
    if let (Some(Extension(p)), Some(object)) = (principal, status.as_object_mut()) {
        object.insert("access".into(), json!({ "role": p.kind(), "admin": p.is_admin(&gw.credentials) }));
    }
    Json(status)
}

/// The `/v1/status` object as every reader gets it (the endpoint, the
/// event feed's opening `snapshot`): in a fleet, with the fleet's usage.
pub async fn status_snapshot(gw: &Gateway) -> Value {
    let mut status = status_json(gw);
    fleet_usage(gw, &mut status).await;
    status
}

/// The `/v1/status` object from this instance's own state.
fn status_json(gw: &Gateway) -> Value {
    let registry = gw.registry.load();
    let now = crate::clock::now();
    let now_ms = unix_ms(SystemTime::now());
    let mut providers = Vec::new();
    let mut usage = UsageTotals::default();
    // Whatever the registry holds, in registry order: no provider is known
    // by name.
    for p in registry.providers.iter() {
        usage.add(&p.stats.usage.totals(now_ms));
        providers.push(provider_json(p, now, now_ms));
    }
    let log = &gw.log;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    json!({
        "routingStrategy": gw.strategy.get().as_str(),
        "totalRequests": load(&log.total),
        "successRequests": load(&log.success),
        "failedRequests": load(&log.failed),
        "continuations": load(&log.continuations),
        "providers": providers,
        "routes": gw.routes.load().routes().iter().map(|r| json!({
            "name": r.name,
            "builtin": r.builtin,
            "strategy": r.strategy.map(Strategy::as_str),
        })).collect::<Vec<_>>(),
        "recentRequests": log.recent(RECENT),
        "usage": usage,
        "cache": gw.cache.stats(),
        "browserTokens": {
            "enabled": gw.credentials.token_secret.is_some(),
            "minSecretBytes": 32,
            "maxTtlSeconds": 900,
        },
        "virtualKeys": {
            "count": gw.virtual_keys.current().len(),
            "lastReloadError": gw.virtual_keys.last_error(),
        },
        "quotaSkips": gw.metrics.quota_skips(),
        // Where shared state lives, which instance answered, and whether
        // the shared state is reachable ("degraded: shared state unavailable").
        "instanceId": gw.fleet.instance_id(),
        "sharedState": gw.fleet.status(),
        // Adapter versions refused by a reload (step and error), by provider.
        "adapterRejections": gw.plugins.rejections(),
    })
}

/// In a fleet, the usage of the whole fleet, read from Redis: each
/// provider key's windows (`keys[].windows`, `keys[].requestsInWindow`)
/// and each virtual key's rolling 24 h (`virtualKeys.usage`). The local
/// numbers stay when Redis does not answer (`sharedState.degraded`).
async fn fleet_usage(gw: &Gateway, status: &mut Value) {
    if gw.fleet.shared().is_none() || gw.fleet.is_degraded() {
        return;
    }
    let mut usage = Vec::new();
    for k in gw.virtual_keys.current().keys() {
        let Ok((requests, tokens)) = gw.fleet.virtual_key_usage(&k.handle()).await else { return };
        usage.push(json!({"maskedId": k.masked_id(), "label": k.label, "requestsInWindow": requests,
            "tokensInWindow": tokens, "dailyRequestCap": k.daily_request_cap, "dailyTokenCap": k.daily_token_cap}));
    }
    usage.sort_by(|a, b| a["label"].as_str().cmp(&b["label"].as_str()));
    if let Some(vk) = status["virtualKeys"].as_object_mut() {
        vk.insert("usage".into(), Value::Array(usage));
    }
    let registry = gw.registry.load();
    let mut read = 0usize;
    for (p, shown) in registry.providers.iter().zip(status["providers"].as_array_mut().into_iter().flatten()) {
        if *p.keys.limits() == freellm_limits::quota::Limits::default() {
            continue; // nothing limited: nothing shared
        }
        for (index, key) in shown["keys"].as_array_mut().into_iter().flatten().enumerate() {
            let Some(store_id) = p.keys.store_id(&p.id, index) else { continue };
            let Ok(windows) = gw.fleet.provider_key_usage(&store_id).await else { return };
            key["requestsInWindow"] = json!(windows.requests_minute);
            key["windows"] = json!(windows);
            read += 1;
        }
    }
    if let Some(shared) = status["sharedState"].as_object_mut() {
        shared.insert("fleetKeyWindows".into(), json!(read));
    }
}

/// `GET /v1/status/virtual-keys` (admin): masked ids, caps and usage (the
/// fleet's, when instances share state).
pub async fn virtual_keys(State(gw): State<SharedGateway>) -> Json<Value> {
    let now_ms = unix_ms(SystemTime::now());
    let set = gw.virtual_keys.current();
    let mut keys: Vec<Value> = Vec::with_capacity(set.len());
    for k in set.keys() {
        let usage = gw.virtual_keys.usage_in(&gw.fleet, k, now_ms).await;
        keys.push(crate::http::api::me::key_json(k, usage, now_ms));
    }
    keys.sort_by(|a, b| a["label"].as_str().cmp(&b["label"].as_str()));
    Json(json!({
        "softCapWarning": "Counters are rolling 24h and persisted across restarts (at most the last second of \
             counts can be lost to a crash). Request caps are exact; not a billing system.",
        "count": keys.len(),
        "lastReloadError": gw.virtual_keys.last_error(),
        "keys": keys,
    }))
}

fn provider_json(p: &ProviderEntry, now: Instant, now_ms: u64) -> Value {
    let info = p.adapter.as_ref().map(|a| &a.info);
    let stats = &p.stats;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    let at = |ms: u64| (ms > 0).then(|| iso8601(ms));
    let breaker = p.breakers.summary(now);
    let keys = p.keys.status(now);
    let limits = p.keys.limits();
    json!({
        "id": p.id.as_ref(),
        "name": info.map_or_else(|| p.id.to_string(), |i| i.display_name.clone()),
        "enabled": p.live().is_some(),
        "note": p.note,
        // The variable its keys come from (`None`: a provider without keys).
        "keyEnv": p.key_env(),
        // The provider's summary (its worst model), then each model's own.
        "circuitBreakerState": breaker.state,
        "circuitBreaker": breaker,
        "modelBreakers": p.breakers.models().iter().map(|(model, b)| {
            (model.clone(), serde_json::to_value(b.snapshot(now)).unwrap_or(Value::Null))
        }).collect::<serde_json::Map<String, Value>>(),
        "totalRequests": load(&stats.total),
        "successRequests": load(&stats.success),
        "failedRequests": load(&stats.failed),
        "rateLimitedRequests": load(&stats.rate_limited),
        "lastError": at(load(&stats.last_error_ms)),
        "lastErrorMessage": stats.last_error.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        "lastUsedAt": at(load(&stats.last_used_ms)),
        "models": info.map(|i| i.models.iter().map(|m| format!("{}/{}", p.id, m.id)).collect::<Vec<_>>()).unwrap_or_default(),
        "keyCount": p.keys.len(),
        "keysAvailable": p.keys.available(now),
        "keys": keys,
        "usage": stats.usage.totals(now_ms),
        "privacy": info.map(|i| json!({
            "policy": privacy_name(i.privacy.policy),
            "sourceUrl": i.privacy.source_url,
            "lastVerified": i.privacy.last_verified,
            "note": i.privacy.note,
        })),
        "limits": {
            "requestsPerMinute": limits.requests_per_minute,
            "requestsPerDay": limits.requests_per_day,
            "tokensPerMinute": limits.tokens_per_minute,
            "tokensPerDay": limits.tokens_per_day,
        },
        // Models counted against limits of their own (contract 0.2).
        "modelLimits": p.model_keys.iter().map(|(model, keys)| {
            let l = keys.limits();
            (model.clone(), json!({
                "requestsPerMinute": l.requests_per_minute,
                "requestsPerDay": l.requests_per_day,
                "tokensPerMinute": l.tokens_per_minute,
                "tokensPerDay": l.tokens_per_day,
                "keysAvailable": keys.available(now),
            }))
        }).collect::<serde_json::Map<String, Value>>(),
    })
}

/// `PATCH /v1/status/routing` with `{"strategy": "quota_aware" | "round_robin" | "random"}`.
pub async fn set_routing(State(gw): State<SharedGateway>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let value: Value =
        serde_json::from_slice(&body).map_err(|e| ApiError::invalid_body(format!("malformed JSON: {e}")))?;
    let text = value.get("strategy").and_then(Value::as_str).ok_or_else(|| {
        ApiError::invalid_body("expected {\"strategy\": \"quota_aware\" | \"round_robin\" | \"random\"}")
    })?;
    let strategy: Strategy = text.parse().map_err(ApiError::invalid_body)?;
    gw.strategy.set(strategy);
    gw.events.publish(Event::Routing { strategy: strategy.as_str().to_owned() });
    tracing::info!(strategy = strategy.as_str(), "routing strategy changed");
    Ok(Json(status_snapshot(&gw).await))
}

/// `POST /v1/status/providers/{id}/reset`.
pub async fn reset_provider(State(gw): State<SharedGateway>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let registry = gw.registry.load();
    let provider = registry.get(&id).ok_or_else(|| ApiError::ProviderNotFound { id: id.clone() })?;
    provider.breakers.reset();
    provider.reset_keys();
    gw.events.publish_breaker(&id, freellm_limits::breaker::BreakerState::Closed, None);
    // A reset on one instance resets the provider for the whole fleet.
    gw.fleet_health.publish(crate::fleet::health::HealthChange::ProviderReset { provider: id.clone() }).await;
    tracing::info!(provider = %id, "provider reset by admin");
    let mut answer = provider_json(provider, crate::clock::now(), unix_ms(SystemTime::now()));
    if let Some(object) = answer.as_object_mut() {
        object.remove("privacy");
    }
    Ok(Json(answer))
}
