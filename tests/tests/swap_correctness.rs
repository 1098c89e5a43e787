//! End-to-end swap correctness: the response cache never serves an answer
//! of an adapter version that no longer runs (after a hot swap, after the
//! provider's removal), and an upload pins its slot explicitly: `/v1/plugins`
//! says where each version came from, the pin survives a restart, a rebuilt
//! component file is reported instead of ignored, and
//! `POST /v1/plugins/{id}/reload?source=file` switches back.

use std::path::Path;
use std::time::{Duration, Instant};

use freellm_e2e::*;
use serde_json::{Value, json};

fn install(src: &Path, dst: &Path) {
    let tmp = dst.with_extension("incoming");
    std::fs::copy(src, &tmp).unwrap();
    std::fs::rename(&tmp, dst).unwrap();
}

fn sha256(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

async fn mock() -> MockUpstream {
    MockUpstream::start(|_| Reply::ok(completion("m", "Hello"))).await
}

fn swap_block(component: &Path, mock: &str) -> String {
    format!("[providers.swap]\ncomponent = \"{}\"\nbase_url = \"{mock}/v1\"\n", component.display())
}

async fn plugin(gw: &Gateway, id: &str) -> Value {
    let list: Value = gw.get("/v1/plugins").await.json().await.unwrap();
    list["plugins"].as_array().unwrap().iter().find(|p| p["id"] == id).cloned().unwrap_or(Value::Null)
}

async fn wait_hash(gw: &Gateway, id: &str, hash: &str) {
    let started = Instant::now();
    while plugin(gw, id).await["hash"] != hash {
        assert!(started.elapsed() < Duration::from_secs(20), "{id} never served {hash}:\n{}", gw.log());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until `/v1/models` lists `model` (or no longer does).
async fn wait_listed(gw: &Gateway, model: &str, listed: bool) {
    let started = Instant::now();
    loop {
        let v: Value = gw.get("/v1/models").await.json().await.unwrap();
        if v["data"].as_array().unwrap().iter().any(|m| m["id"] == model) == listed {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{model} listed={listed} never:\n{}", gw.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asks `model` the same question; `(cached, variant, provider)`.
async fn ask(gw: &Gateway, model: &str) -> (bool, String, String) {
    let r = gw.chat(chat_body(model)).await;
    assert_eq!(r.status(), 200, "{}", gw.log());
    let cached = r.headers()["x-freellm-cached"] == "true";
    let provider = r.headers()["x-freellm-provider"].to_str().unwrap().to_owned();
    let body: Value = r.json().await.unwrap();
    (cached, body["x_adapter_variant"].as_str().unwrap_or("").to_owned(), provider)
}

#[tokio::test]
async fn after_a_swap_the_old_versions_cached_answers_are_never_served() {
    let mock = mock().await;
    let dir = tempfile::tempdir().unwrap();
    let component = dir.path().join("swap.wasm");
    install(&swap_variant("v1"), &component);
    let gw = Gateway::start_with(GatewayOptions { config: swap_block(&component, &mock.url), env: Vec::new() }).await;
    for model in ["swap/m", "free"] {
        assert_eq!(ask(&gw, model).await, (false, "v1".into(), "swap".into()));
        assert_eq!(ask(&gw, model).await, (true, "v1".into(), "swap".into()), "the cache serves v1's answer");
    }

    install(&swap_variant("v2"), &component);
    wait_hash(&gw, "swap", &sha256(&swap_variant("v2"))).await;
    for model in ["swap/m", "free"] {
        assert_eq!(ask(&gw, model).await, (false, "v2".into(), "swap".into()), "{model}: v1's answer after the swap");
        assert_eq!(ask(&gw, model).await, (true, "v2".into(), "swap".into()), "{model}: v2's answers are cached");
    }
    let status: Value = gw.get("/v1/status").await.json().await.unwrap();
    assert_eq!(status["cache"]["stale"], 2, "{}", status["cache"]);
}

#[tokio::test]
async fn a_removed_providers_cached_answers_never_come_back() {
    let mock = mock().await;
    let dir = tempfile::tempdir().unwrap();
    let component = dir.path().join("swap.wasm");
    install(&swap_variant("v1"), &component);
    let other = format!(
        "[providers.other]\ncomponent = \"{}\"\n[providers.other.settings]\nbase_url = \"{}/v1\"\n\
         auth = \"none\"\nmodels = [\"o1\"]\nprivacy = \"local\"\n",
        component_path("freellm-provider-openai-compatible").display(),
        mock.url
    );
    let with_swap = format!("{}\n{other}", swap_block(&component, &mock.url));
    let gw = Gateway::start_with(GatewayOptions { config: with_swap.clone(), env: Vec::new() }).await;
    for model in ["free", "swap/m"] {
        assert_eq!(ask(&gw, model).await, (false, "v1".into(), "swap".into()));
        assert!(ask(&gw, model).await.0, "{model}: the second answer comes from the cache");
    }

    std::fs::write(gw.config_file(), &other).unwrap();
    wait_listed(&gw, "swap/m", false).await;
    assert_eq!(ask(&gw, "free").await, (false, String::new(), "other".into()), "removed: not from the cache");

    // Added back with the very same component: its old answers stay gone.
    std::fs::write(gw.config_file(), &with_swap).unwrap();
    wait_listed(&gw, "swap/m", true).await;
    assert_eq!(ask(&gw, "swap/m").await, (false, "v1".into(), "swap".into()), "purged at removal");
}

#[tokio::test]
async fn an_upload_pins_its_slot_across_a_restart_until_reloaded_from_the_file() {
    let mock = mock().await;
    let dir = tempfile::tempdir().unwrap();
    let component = dir.path().join("swap.wasm");
    install(&swap_variant("v1"), &component);
    let (h1, h2) = (sha256(&swap_variant("v1")), sha256(&swap_variant("v2")));
    let data = dir.path().join("data").display().to_string();
    let options = || GatewayOptions {
        config: swap_block(&component, &mock.url),
        env: vec![("FREELLM_DATA_DIR".into(), data.clone()), ("CACHE_ENABLED".into(), "false".into())],
    };
    let gw = Gateway::start_with(options()).await;
    let p = plugin(&gw, "swap").await;
    assert_eq!((p["hash"].as_str(), p["source"].as_str()), (Some(h1.as_str()), Some("file")), "{p}");
    let r = gw
        .http
        .post(format!("{}/v1/plugins/swap", gw.url))
        .header("content-type", "application/wasm")
        .body(std::fs::read(swap_variant("v2")).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let p = plugin(&gw, "swap").await;
    assert_eq!((p["hash"].as_str(), p["source"].as_str()), (Some(h2.as_str()), Some("upload")), "{p}");
    assert_eq!(p["pinned_upload"]["hash"], h2.as_str());
    gw.terminate().await;

    // A restart keeps the upload as the active version.
    let gw = Gateway::start_with(options()).await;
    let p = plugin(&gw, "swap").await;
    assert_eq!((p["hash"].as_str(), p["source"].as_str()), (Some(h2.as_str()), Some("upload")), "{p}");
    assert_eq!(ask(&gw, "swap/m").await.1, "v2");

    // A rebuilt component file is not silently ignored: the watcher's
    // reload notes it, and a reload answers pinned_by_upload with the way out.
    install(&swap_variant("flaky"), &component);
    let started = Instant::now();
    loop {
        let list: Value = gw.get("/v1/plugins").await.json().await.unwrap();
        if list["events"].to_string().contains("pinned by upload") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "the rebuilt file went unnoticed: {list}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    install(&swap_variant("v1"), &component);
    let r = gw.http.post(format!("{}/v1/plugins/reload", gw.url)).json(&json!({"id": "swap"})).send().await.unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["outcomes"][0]["action"], "pinned_by_upload", "{body}");
    assert!(body["outcomes"][0]["note"].as_str().unwrap().contains("/v1/plugins/swap/reload?source=file"), "{body}");
    assert_eq!(plugin(&gw, "swap").await["hash"], h2.as_str(), "still the upload");

    // Back to the file, explicitly; the upload is gone from the data directory.
    let r = gw.http.post(format!("{}/v1/plugins/swap/reload?source=file", gw.url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["outcomes"][0]["action"], "swapped", "{body}");
    let p = plugin(&gw, "swap").await;
    assert_eq!((p["hash"].as_str(), p["source"].as_str()), (Some(h1.as_str()), Some("file")), "{p}");
    assert_eq!(p["pinned_upload"], Value::Null);
    let uploads: Vec<String> = std::fs::read_dir(dir.path().join("data/uploads"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".wasm"))
        .collect();
    assert!(uploads.is_empty(), "{uploads:?}");
    let r = gw.http.post(format!("{}/v1/plugins/swap/reload?source=elsewhere", gw.url)).send().await.unwrap();
    assert_eq!(r.status(), 400);
    gw.terminate().await;

    // And the file serves after the next restart too.
    let gw = Gateway::start_with(options()).await;
    assert_eq!(plugin(&gw, "swap").await["source"], "file");
    assert_eq!(ask(&gw, "swap/m").await.1, "v1");
}

#[tokio::test]
async fn a_rolled_back_canary_upload_never_comes_back_after_a_restart() {
    let mock = mock().await;
    let dir = tempfile::tempdir().unwrap();
    let component = dir.path().join("swap.wasm");
    install(&swap_variant("v1"), &component);
    let h2 = sha256(&swap_variant("v2"));
    let data = dir.path().join("data").display().to_string();
    let options = || GatewayOptions {
        config: swap_block(&component, &mock.url),
        env: vec![("FREELLM_DATA_DIR".into(), data.clone()), ("CACHE_ENABLED".into(), "false".into())],
    };
    let gw = Gateway::start_with(options()).await;
    let upload = |variant: &str, query: &str| {
        gw.http
            .post(format!("{}/v1/plugins/swap{query}", gw.url))
            .header("content-type", "application/wasm")
            .body(std::fs::read(swap_variant(variant)).unwrap())
            .send()
    };
    assert_eq!(upload("v2", "").await.unwrap().status(), 200);
    let r: Value = upload("flaky", "?canary=50").await.unwrap().json().await.unwrap();
    assert_eq!(r["outcomes"][0]["action"], "canary", "{r}");
    let mut i = 0;
    while plugin(&gw, "swap").await["state"] == "canary" {
        assert!(i < 400, "no verdict after {i} requests: {}", plugin(&gw, "swap").await);
        let mut body = chat_body("swap/m");
        body["messages"][0]["content"] = json!(format!("canary {i}"));
        let _ = gw.chat(body).await;
        i += 1;
    }
    let p = plugin(&gw, "swap").await;
    assert_eq!((p["hash"].as_str(), p["source"].as_str()), (Some(h2.as_str()), Some("upload")), "{p}");
    assert_eq!(p["pinned_upload"]["hash"], h2.as_str(), "the pin follows the version that kept serving: {p}");
    gw.terminate().await;

    let gw = Gateway::start_with(options()).await;
    let p = plugin(&gw, "swap").await;
    assert_eq!((p["hash"].as_str(), p["source"].as_str()), (Some(h2.as_str()), Some("upload")), "{p}");
}
