//! `GET /v1/models`: the meta-models and configured routes, then every
//! enabled provider's catalog in registry order, in OpenAI's list shape.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::state::SharedGateway;

/// `created` of every entry (catalogs carry no dates).
const CREATED: u64 = 1_700_000_000;

/// Lists the models a client may ask for right now.
pub async fn list_models(State(gw): State<SharedGateway>) -> Json<Value> {
    let registry = gw.registry.load();
    let mut data: Vec<Value> = gw
        .routes
        .load()
        .names()
        .map(|name| json!({ "id": name, "object": "model", "created": CREATED, "owned_by": "freellm", "provider": "freellm" }))
        .collect();
    for provider in registry.enabled() {
        let Some(adapter) = provider.live() else { continue };
        for model in &adapter.info.models {
            data.push(json!({
                "id": format!("{}/{}", provider.id, model.id),
                "object": "model",
                "created": CREATED,
                "owned_by": provider.id.as_ref(),
                "provider": provider.id.as_ref(),
                "context_window": model.context_window,
            }));
        }
    }
    Json(json!({ "object": "list", "data": data }))
}
