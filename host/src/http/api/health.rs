//! `GET /healthz`: liveness, no auth, no limits.

use axum::Json;
use serde_json::{Value, json};

/// Always `{"status":"ok"}` while the process serves.
pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}
