//! What the fleet's end-to-end modules share (`fleet_caps`, `fleet_state`):
//! a real `redis-server` and a mock upstream, gateways started on them,
//! and the status reads the tests poll.

use std::time::{Duration, Instant};

use freellm_e2e::*;
use serde_json::{Value, json};

pub(crate) const ADMIN: &str = "admin-secret-key-9876543210";
pub(crate) const GROQ_KEY: &str = "gsk_fleet_secret_abcdefghijklmnop";
pub(crate) const VK: &str = "sk-freellm-fleet-tenant-0001";
pub(crate) const MODEL: &str = "groq/llama-3.3-70b-versatile";

/// Room for every test's traffic.
pub(crate) const ROOMY: u32 = 100_000;

pub(crate) struct Setup {
    pub(crate) redis: RedisServer,
    pub(crate) mock: MockUpstream,
    dir: tempfile::TempDir,
}

impl Setup {
    pub(crate) async fn new(redis: RedisServer) -> Self {
        Self { redis, mock: MockUpstream::completing().await, dir: tempfile::tempdir().expect("tempdir") }
    }

    /// A virtual-keys file with one key and `caps`.
    pub(crate) fn keys_file(&self, caps: Value) -> String {
        let mut key = json!({"id": VK, "label": "tenant"});
        if let (Some(k), Some(c)) = (key.as_object_mut(), caps.as_object()) {
            k.extend(c.clone());
        }
        let path = self.dir.path().join("virtual-keys.json");
        std::fs::write(&path, json!({"keys": [key]}).to_string()).expect("write keys");
        path.display().to_string()
    }

    pub(crate) fn options(&self, config: &str, extra: &[(&str, &str)]) -> GatewayOptions {
        let mut env = vec![
            ("GROQ_API_KEY".to_owned(), GROQ_KEY.to_owned()),
            ("GROQ_BASE_URL".to_owned(), format!("{}/v1", self.mock.url)),
            ("FREELLM_ADMIN_KEY".to_owned(), ADMIN.to_owned()),
            ("CACHE_ENABLED".to_owned(), "false".to_owned()),
            // Three debug builds under a burst share two cores: a call's
            // answer can take longer than the 50 ms default, and a timeout
            // would (rightly) degrade the link and let routing fail open.
            ("FREELLM_REDIS_TIMEOUT_MS".to_owned(), "1000".to_owned()),
        ];
        env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        GatewayOptions { config: config.to_owned(), env }
    }

    pub(crate) async fn fleet(&self, n: usize, config: &str, extra: &[(&str, &str)]) -> Vec<Gateway> {
        Gateway::start_fleet(n, &self.redis.url(), |_| self.options(config, extra)).await
    }
}

pub(crate) fn chat(gw: &Gateway, bearer: &str) -> reqwest::RequestBuilder {
    gw.http.post(format!("{}/v1/chat/completions", gw.url)).bearer_auth(bearer).json(&chat_body(MODEL))
}

pub(crate) async fn admin_get(gw: &Gateway, path: &str) -> Value {
    let r = gw.http.get(format!("{}{path}", gw.url)).bearer_auth(ADMIN).send().await.expect("get");
    r.json().await.expect("json")
}

/// Polls `/v1/status` until `sharedState.degraded` is `degraded`.
pub(crate) async fn wait_degraded(gw: &Gateway, degraded: bool, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let status = admin_get(gw, "/v1/status").await;
        if status["sharedState"]["degraded"] == degraded {
            return status;
        }
        assert!(Instant::now() < deadline, "sharedState never became degraded={degraded}: {}", status["sharedState"]);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
