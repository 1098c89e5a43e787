//! End-to-end: provider keys from the keys file named in `plugins.toml`,
//! re-read while the gateway runs (#16 item 9). A key written to the file
//! reaches a running provider, a provider added live gets its keys from the
//! file, a file that does not parse keeps the old keys, the environment
//! wins over the file, and no key shows in the log or the status.

use std::path::Path;
use std::time::{Duration, Instant};

use freellm_e2e::*;
use serde_json::Value;

const FIRST: &str = "keyfile-first-secret-value";
const SECOND: &str = "keyfile-second-secret-value";
const LAB: &str = "keyfile-lab-secret-value";
const BROKEN: &str = "keyfile-broken-secret-value";
const CEREBRAS_FILE: &str = "keyfile-cerebras-secret-value";
const CEREBRAS_ENV: &str = "environment-cerebras-secret-value";

/// Polls `check` every 50 ms until it holds, for at most 20 s.
async fn eventually<F: std::future::Future<Output = bool>>(what: &str, gw: &Gateway, mut check: impl FnMut() -> F) {
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < Duration::from_secs(20), "{what} never happened:\n{}", gw.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Replaces `path` in one step, as an editor or a deploy tool would.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn bearer_of_last(mock: &MockUpstream) -> String {
    mock.requests().last().and_then(|r| r.header("authorization")).unwrap_or_default()
}

#[tokio::test]
async fn keys_from_the_keys_file_reach_providers_without_a_restart() {
    let mock = MockUpstream::completing().await;
    let keys_dir = tempfile::tempdir().unwrap();
    let keys = keys_dir.path().join("keys.toml");
    // The environment's key wins over the file's for cerebras.
    std::fs::write(&keys, format!("CEREBRAS_API_KEY = [\"{CEREBRAS_FILE}\"]\n")).unwrap();
    let config = format!(
        "[keys]\nfile = {keys:?}\n\n\
         [providers.groq]\ncomponent = \"{{component:freellm-provider-groq}}\"\nbase_url = \"{url}\"\n\n\
         [providers.cerebras]\ncomponent = \"{{component:freellm-provider-cerebras}}\"\nbase_url = \"{url}\"\n",
        keys = keys.display().to_string(),
        url = mock.url,
    );
    let gw =
        // Every chat goes upstream (no cache), so the mock sees each key used.
        Gateway::start_with(GatewayOptions {
            config,
            env: vec![("CEREBRAS_API_KEY".into(), CEREBRAS_ENV.into()), ("CACHE_ENABLED".into(), "false".into())],
        })
            .await;
    let groq = || chat_body("groq/llama-3.1-8b-instant");

    // No key for groq anywhere: it is not enabled, and says where a key goes.
    assert_ne!(gw.chat(groq()).await.status(), 200);
    let status: Value = gw.get("/v1/status").await.json().await.unwrap();
    assert!(status.to_string().contains("or add it to the keys file"), "{status}");

    // The environment wins over the keys file.
    let r = gw.chat(chat_body("cerebras/llama3.1-8b")).await;
    assert_eq!(r.status(), 200, "{}", gw.log());
    assert_eq!(bearer_of_last(&mock), format!("Bearer {CEREBRAS_ENV}"));

    // A key written to the file reaches the running provider.
    let with_first = format!("CEREBRAS_API_KEY = [\"{CEREBRAS_FILE}\"]\nGROQ_API_KEY = [\"{FIRST}\"]\n");
    replace(&keys, &with_first);
    eventually("groq answering with the file's key", &gw, || async { gw.chat(groq()).await.status() == 200 }).await;
    assert_eq!(bearer_of_last(&mock), format!("Bearer {FIRST}"));

    // A second key joins the ring; the first keeps its window.
    replace(&keys, &format!("CEREBRAS_API_KEY = [\"{CEREBRAS_FILE}\"]\nGROQ_API_KEY = [\"{FIRST}\", \"{SECOND}\"]\n"));
    let groq_keys = || async {
        let status: Value = gw.get("/v1/status").await.json().await.unwrap();
        status["providers"].as_array().unwrap().iter().find(|p| p["id"] == "groq").unwrap()["keys"].clone()
    };
    eventually("groq holding two keys", &gw, || async { groq_keys().await.as_array().unwrap().len() == 2 }).await;
    let keys_now = groq_keys().await;
    assert!(keys_now[0]["requestsInWindow"].as_u64().unwrap() >= 1, "the first key's window was kept: {keys_now}");
    assert_eq!(keys_now[1]["requestsInWindow"], 0, "{keys_now}");
    let mut seen = Vec::new();
    for _ in 0..4 {
        assert_eq!(gw.chat(groq()).await.status(), 200);
        seen.push(bearer_of_last(&mock));
    }
    assert!(seen.contains(&format!("Bearer {SECOND}")), "the new key is used: {seen:?}");

    // A provider added to plugins.toml gets its key from the file, by its id.
    let with_lab = format!(
        "CEREBRAS_API_KEY = [\"{CEREBRAS_FILE}\"]\nGROQ_API_KEY = [\"{FIRST}\", \"{SECOND}\"]\nlab = \"{LAB}\"\n"
    );
    replace(&keys, &with_lab);
    let base = std::fs::read_to_string(gw.config_file()).unwrap();
    let lab = format!(
        "{base}\n[providers.lab]\ncomponent = \"{}\"\n[providers.lab.settings]\nbase_url = \"{}\"\nmodels = [\"lab-1\"]\n",
        component_path("freellm-provider-openai-compatible").display(),
        mock.url
    );
    replace(&gw.config_file(), &lab);
    eventually("lab answering", &gw, || async { gw.chat(chat_body("lab/lab-1")).await.status() == 200 }).await;
    assert_eq!(bearer_of_last(&mock), format!("Bearer {LAB}"));

    // A file that does not parse changes nothing, and the log says why
    // without quoting it.
    replace(&keys, &format!("GROQ_API_KEY = [\"{BROKEN}\"\nlab = \"{LAB}\n"));
    eventually("the broken file reported", &gw, || async { gw.log().contains("keys file rejected") }).await;
    assert_eq!(gw.chat(groq()).await.status(), 200);
    assert!(bearer_of_last(&mock).ends_with("-secret-value") && !bearer_of_last(&mock).contains(BROKEN));
    assert_eq!(gw.chat(chat_body("lab/lab-1")).await.status(), 200);
    assert_eq!(bearer_of_last(&mock), format!("Bearer {LAB}"));

    // No key in the log, the status or the adapters' view.
    let status = gw.get("/v1/status").await.text().await.unwrap();
    let plugins = gw.get("/v1/plugins").await.text().await.unwrap();
    let log = gw.log();
    for secret in [FIRST, SECOND, LAB, BROKEN, CEREBRAS_FILE, CEREBRAS_ENV] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
        assert!(!status.contains(secret), "{secret} in the status");
        assert!(!plugins.contains(secret), "{secret} in /v1/plugins");
    }
}

#[tokio::test]
async fn a_keys_file_that_does_not_parse_at_start_refuses_to_start_without_quoting_it() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.json");
    std::fs::write(&keys, format!("{{\"GROQ_API_KEY\": [\"{BROKEN}\"")).unwrap();
    let (code, log) = Gateway::start_failing(GatewayOptions {
        config: "[providers.groq]\ncomponent = \"unused.wasm\"\n".into(),
        env: vec![("FREELLM_PROVIDER_KEYS_FILE".into(), keys.display().to_string())],
    })
    .await;
    assert_ne!(code, Some(0), "{log}");
    assert!(log.contains("keys.json does not parse: invalid JSON at line 1"), "{log}");
    assert!(!log.contains(BROKEN), "{log}");
}
