//! End-to-end hot swap: adapter files replaced under load, broken versions
//! refused, canaries promoted or rolled back, providers added and removed,
//! uploads — all without a restart.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use freellm_e2e::*;
use serde_json::{Value, json};

/// Replaces `dst` atomically with a copy of `src` (write + rename, as a
/// deploy tool would).
fn install(src: &Path, dst: &Path) {
    let tmp = dst.with_extension("incoming");
    std::fs::copy(src, &tmp).unwrap();
    std::fs::rename(&tmp, dst).unwrap();
}

fn sha256(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

struct Swap {
    gw: Gateway,
    mock: MockUpstream,
    dir: tempfile::TempDir,
}

impl Swap {
    fn component(&self) -> PathBuf {
        self.dir.path().join("swap.wasm")
    }

    fn config_path(&self) -> PathBuf {
        self.gw.config_file()
    }

    async fn plugin(&self, id: &str) -> Value {
        let list: Value = self.gw.get("/v1/plugins").await.json().await.unwrap();
        list["plugins"].as_array().unwrap().iter().find(|p| p["id"] == id).cloned().unwrap_or(Value::Null)
    }

    /// Waits until provider `id` serves the component with `hash` live.
    async fn wait_hash(&self, id: &str, hash: &str) -> Duration {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(20) {
            if self.plugin(id).await["hash"] == hash {
                return started.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{id} never served {hash}:\n{}", self.gw.log());
    }

    async fn wait_rejection(&self, id: &str, step: &str) -> Value {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(20) {
            let p = self.plugin(id).await;
            if p["last_error"]["step"] == step {
                return p;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{id} never reported a {step} rejection: {}\n{}", self.plugin(id).await, self.gw.log());
    }
}

fn swap_config(component: &Path, extra: &str) -> String {
    format!("[providers.swap]\ncomponent = \"{}\"\nbase_url = \"{{mock}}/v1\"\n{extra}\n", component.display())
}

async fn start(extra: &str) -> Swap {
    let mock = MockUpstream::start(|r| {
        if r.json()["stream"] == true {
            Reply::sse(&[&chunk("Hi", None), &chunk(" there", Some("stop")), "[DONE]"])
        } else {
            Reply::ok(completion("m", "Hello"))
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let component = dir.path().join("swap.wasm");
    install(&swap_variant("v1"), &component);
    let config = swap_config(&component, extra).replace("{mock}", &mock.url);
    let gw = Gateway::start_with(GatewayOptions { config, env: vec![("CACHE_ENABLED".into(), "false".into())] }).await;
    Swap { gw, mock, dir }
}

#[tokio::test]
async fn a_component_swapped_twenty_times_under_load_never_fails_a_request() {
    let s = start("").await;
    let (v1, v2) = (swap_variant("v1"), swap_variant("v2"));
    let (h1, h2) = (sha256(&v1), sha256(&v2));
    s.wait_hash("swap", &h1).await;

    let stop = Arc::new(AtomicBool::new(false));
    let seen_v2 = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for worker in 0..4 {
        let (http, url, stop, seen_v2) = (s.gw.http.clone(), s.gw.url.clone(), stop.clone(), seen_v2.clone());
        clients.push(tokio::spawn(async move {
            let mut done = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let stream = worker % 2 == 1;
                let body = json!({"model": "swap/m", "messages": [{"role": "user", "content": format!("hi {done}")}], "stream": stream});
                let r = http.post(format!("{url}/v1/chat/completions")).json(&body).send().await.expect("request");
                assert_eq!(r.status(), 200, "a request failed during a swap");
                let variants: Vec<String> = if stream {
                    sse_data(r)
                        .await
                        .iter()
                        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
                        .filter_map(|v| v["x_adapter_variant"].as_str().map(str::to_owned))
                        .collect()
                } else {
                    let v: Value = r.json().await.unwrap();
                    vec![v["x_adapter_variant"].as_str().expect("tagged answer").to_owned()]
                };
                assert!(!variants.is_empty());
                assert!(variants.iter().all(|v| *v == variants[0]), "an answer mixed versions: {variants:?}");
                if variants[0] == "v2" {
                    seen_v2.fetch_add(1, Ordering::Relaxed);
                }
                done += 1;
            }
            done
        }));
    }
    for i in 0..20 {
        let (src, hash) = if i % 2 == 0 { (&v2, &h2) } else { (&v1, &h1) };
        install(src, &s.component());
        s.wait_hash("swap", hash).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for c in clients {
        total += c.await.expect("client task panicked (a request failed)");
    }
    assert!(total > 40, "only {total} requests");
    assert!(seen_v2.load(Ordering::Relaxed) > 0, "the new version served");
    let p = s.plugin("swap").await;
    assert_eq!(p["hash"], h1);
    assert_eq!(p["last_error"], Value::Null);
    assert!(p["calls"].as_u64().unwrap() > 0 && p["p50_us"].as_u64().is_some(), "{p}");
}

#[tokio::test]
async fn broken_components_never_go_live() {
    let s = start("").await;
    let h1 = sha256(&swap_variant("v1"));
    s.wait_hash("swap", &h1).await;
    let ok = || async { s.gw.chat(chat_body("swap/m")).await.status() };

    // Not a component at all.
    std::fs::write(s.dir.path().join("garbage.wasm"), b"\0asm\x0d\0\x01\0 definitely not").unwrap();
    install(&s.dir.path().join("garbage.wasm"), &s.component());
    s.wait_rejection("swap", "compile").await;
    assert_eq!(ok().await, 200);
    assert_eq!(s.plugin("swap").await["hash"], h1, "the good version keeps serving");

    // A component of another world.
    install(&swap_variant("wrong-world"), &s.component());
    let p = s.wait_rejection("swap", "contract").await;
    assert!(p["last_error"]["error"].as_str().unwrap().contains("freellm:provider"), "{p}");
    assert_eq!(ok().await, 200);

    // configure fails: the generic adapter without its required settings.
    install(&component_path("freellm-provider-openai-compatible"), &s.component());
    s.wait_rejection("swap", "configure").await;
    assert_eq!(ok().await, 200);

    // Compiles and configures, but fails the conformance self-check.
    install(&swap_variant("broken"), &s.component());
    let p = s.wait_rejection("swap", "self-check").await;
    assert!(p["last_error"]["error"].as_str().unwrap().contains("classify-429"), "{p}");
    assert_eq!(ok().await, 200);
    assert_eq!(s.plugin("swap").await["hash"], h1);

    // Fixed: the next good version goes live and clears the error.
    install(&swap_variant("v2"), &s.component());
    s.wait_hash("swap", &sha256(&swap_variant("v2"))).await;
    assert_eq!(s.plugin("swap").await["last_error"], Value::Null);
    let status: Value = s.gw.get("/v1/status").await.json().await.unwrap();
    assert_eq!(status["providers"].as_array().unwrap().last().unwrap()["id"], "swap");
}

#[tokio::test]
async fn a_canary_that_fails_half_its_calls_is_rolled_back_and_a_good_one_promoted() {
    let s = start("canary = 50").await;
    let (h1, h2) = (sha256(&swap_variant("v1")), sha256(&swap_variant("v2")));
    s.wait_hash("swap", &h1).await;

    install(&swap_variant("flaky"), &s.component());
    let started = Instant::now();
    while s.plugin("swap").await["state"] != "canary" {
        assert!(started.elapsed() < Duration::from_secs(20), "no canary: {}", s.plugin("swap").await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut i = 0;
    while s.plugin("swap").await["state"] == "canary" {
        assert!(i < 400, "no verdict after {i} requests: {}", s.plugin("swap").await);
        let mut body = chat_body("swap/m");
        body["messages"][0]["content"] = json!(format!("canary {i}"));
        let _ = s.gw.chat(body).await;
        i += 1;
    }
    let p = s.plugin("swap").await;
    assert_eq!(p["state"], "active");
    assert_eq!(p["hash"], h1, "rolled back to the current version");
    assert_eq!(p["last_error"]["step"], "canary", "{p}");
    let list: Value = s.gw.get("/v1/plugins").await.json().await.unwrap();
    assert!(list["events"].to_string().contains("rolled back"), "{list}");

    install(&swap_variant("v2"), &s.component());
    while s.plugin("swap").await["state"] != "canary" {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut i = 0;
    while s.plugin("swap").await["state"] == "canary" {
        assert!(i < 400, "no verdict");
        let mut body = chat_body("swap/m");
        body["messages"][0]["content"] = json!(format!("good {i}"));
        assert_eq!(s.gw.chat(body).await.status(), 200);
        i += 1;
    }
    assert_eq!(s.plugin("swap").await["hash"], h2, "promoted");
    assert!(s.mock.requests().len() > 20);
}

#[tokio::test]
async fn providers_are_added_and_removed_at_runtime() {
    let s = start("").await;
    let models = || async {
        let v: Value = s.gw.get("/v1/models").await.json().await.unwrap();
        v["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_owned()).collect::<Vec<_>>()
    };
    assert!(!models().await.iter().any(|m| m.starts_with("extra/")));
    let base = std::fs::read_to_string(s.config_path()).unwrap();
    let extra = format!(
        "{base}\n[providers.extra]\ncomponent = \"{}\"\n[providers.extra.settings]\nbase_url = \"{}/v1\"\nauth = \"none\"\nmodels = [\"x1\"]\nprivacy = \"local\"\n",
        component_path("freellm-provider-openai-compatible").display(),
        s.mock.url
    );
    std::fs::write(s.config_path(), &extra).unwrap();
    let started = Instant::now();
    while !models().await.contains(&"extra/x1".to_owned()) {
        assert!(started.elapsed() < Duration::from_secs(20), "extra never appeared:\n{}", s.gw.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(s.gw.chat(chat_body("extra/x1")).await.status(), 200);
    assert_eq!(s.gw.chat(chat_body("swap/m")).await.status(), 200, "the others untouched");

    std::fs::write(s.config_path(), &base).unwrap();
    let started = Instant::now();
    while models().await.contains(&"extra/x1".to_owned()) {
        assert!(started.elapsed() < Duration::from_secs(20), "extra never left");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(s.gw.chat(chat_body("extra/x1")).await.status(), 404);
}

/// Waits until route `name` is (or is no longer) listed in `/v1/models`.
async fn wait_for_route(s: &Swap, name: &str, listed: bool) {
    let started = Instant::now();
    loop {
        let v: Value = s.gw.get("/v1/models").await.json().await.unwrap();
        if v["data"].as_array().unwrap().iter().any(|m| m["id"] == name) == listed {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{name} listed={listed} never:\n{}", s.gw.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn routes_are_added_changed_and_refused_at_runtime() {
    let s = start("").await;
    assert_eq!(s.gw.chat(chat_body("my-chat")).await.status(), 404);
    let base = std::fs::read_to_string(s.config_path()).unwrap();

    // A new route goes live without a restart and answers.
    std::fs::write(s.config_path(), format!("{base}\n[routes.my-chat]\ntargets = [\"swap/m\"]\n")).unwrap();
    wait_for_route(&s, "my-chat", true).await;
    let r = s.gw.chat(chat_body("my-chat")).await;
    assert_eq!(r.status(), 200, "{}", s.gw.log());
    assert_eq!(r.headers()["x-freellm-requested-model"], "my-chat");
    assert_eq!(r.headers()["x-freellm-model"], "swap/m");

    // A changed route replaces the old one (seen in /v1/status).
    let route_strategy = || async {
        let status: Value = s.gw.get("/v1/status").await.json().await.unwrap();
        status["routes"].as_array().unwrap().iter().find(|r| r["name"] == "my-chat").map(|r| r["strategy"].clone())
    };
    assert_eq!(route_strategy().await, Some(Value::Null));
    std::fs::write(
        s.config_path(),
        format!("{base}\n[routes.my-chat]\ntargets = [\"swap/m\"]\nstrategy = \"round_robin\"\n"),
    )
    .unwrap();
    let started = Instant::now();
    while route_strategy().await != Some(json!("round_robin")) {
        assert!(started.elapsed() < Duration::from_secs(20), "the changed route never applied:\n{}", s.gw.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(s.gw.chat(chat_body("my-chat")).await.status(), 200);

    // A broken edit is refused whole: the running route stays.
    std::fs::write(s.config_path(), format!("{base}\n[routes.my-chat]\ntargets = []\n")).unwrap();
    let started = Instant::now();
    loop {
        let list: Value = s.gw.get("/v1/plugins").await.json().await.unwrap();
        if list["events"].as_array().unwrap().iter().any(|e| e.as_str().unwrap_or("").contains("routes.my-chat")) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "the bad route was not reported:\n{}", s.gw.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(s.gw.chat(chat_body("my-chat")).await.status(), 200, "the last good routes still serve");

    // Removing it takes it away again.
    std::fs::write(s.config_path(), &base).unwrap();
    wait_for_route(&s, "my-chat", false).await;
    assert_eq!(s.gw.chat(chat_body("my-chat")).await.status(), 404);
}

#[tokio::test]
async fn uploads_and_reloads_through_the_admin_api() {
    let s = start("").await;
    let h2 = sha256(&swap_variant("v2"));
    // The live feed reports adapter swaps.
    let mut feed = s.gw.get("/v1/events").await;
    assert_eq!(feed.status(), 200);
    let upload = |bytes: Vec<u8>| {
        s.gw.http
            .post(format!("{}/v1/plugins/swap", s.gw.url))
            .header("content-type", "application/wasm")
            .body(bytes)
            .send()
    };
    let r = upload(std::fs::read(swap_variant("v2")).unwrap()).await.unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["outcomes"][0]["action"], "swapped", "{body}");
    assert_eq!(s.plugin("swap").await["hash"], h2);
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !seen.contains("event: adapter") {
        assert!(Instant::now() < deadline, "no adapter event in the feed: {seen}");
        if let Ok(Ok(Some(bytes))) = tokio::time::timeout(Duration::from_secs(2), feed.chunk()).await {
            seen.push_str(&String::from_utf8_lossy(&bytes));
        }
    }
    assert!(seen.contains(&h2) && seen.contains("\"state\":\"swapped\""), "{seen}");
    drop(feed);
    // A refused upload changes nothing.
    let r = upload(std::fs::read(swap_variant("broken")).unwrap()).await.unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["outcomes"][0]["action"], "rejected", "{body}");
    assert_eq!(s.plugin("swap").await["hash"], h2);
    let r =
        s.gw.http
            .post(format!("{}/v1/plugins/nope", s.gw.url))
            .header("content-type", "application/wasm")
            .body(vec![1u8])
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 404);
    let status: Value = s.gw.get("/v1/status").await.json().await.unwrap();
    assert_eq!(status["adapterRejections"]["swap"]["step"], "self-check", "{}", status["adapterRejections"]);
    // A canary share set through the API applies to the next upload.
    let r =
        s.gw.http
            .post(format!("{}/v1/plugins/swap/canary", s.gw.url))
            .json(&json!({"percent": 30}))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 200);
    let r = upload(std::fs::read(swap_variant("v1")).unwrap()).await.unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["outcomes"][0]["action"], "canary", "{body}");
    assert_eq!(s.plugin("swap").await["canary"]["percent"], 30);
    let r =
        s.gw.http
            .post(format!("{}/v1/plugins/swap/canary", s.gw.url))
            .json(&json!({"percent": 250}))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 400);
    let r =
        s.gw.http.post(format!("{}/v1/plugins/reload", s.gw.url)).json(&json!({"id": "swap"})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["outcomes"][0]["action"], "unchanged", "{body}");
}

#[tokio::test]
async fn other_files_next_to_the_config_start_no_reload() {
    let s = start("").await;
    let reloads = || async {
        let v: Value = s.gw.get("/v1/plugins").await.json().await.unwrap();
        v["reloads"].as_u64().expect("/v1/plugins reports its reload count")
    };
    let before = reloads().await;
    let dir = s.config_path().parent().unwrap().to_path_buf();
    for i in 0..5 {
        std::fs::write(dir.join("gateway.log"), format!("line {i}\n")).unwrap();
        std::fs::write(dir.join("plugins.toml.bak"), format!("# {i}\n")).unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    // Well past the debounce: a reload would have run by now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(reloads().await, before, "writes to other files reloaded the plugins:\n{}", s.gw.log());

    // Rewriting plugins.toml itself does, even unchanged.
    let config = std::fs::read_to_string(s.config_path()).unwrap();
    std::fs::write(s.config_path(), config).unwrap();
    let started = Instant::now();
    while reloads().await == before {
        assert!(started.elapsed() < Duration::from_secs(20), "no reload after plugins.toml changed:\n{}", s.gw.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(s.gw.chat(chat_body("swap/m")).await.status(), 200);
}

#[tokio::test]
async fn a_reload_names_changed_start_up_settings_instead_of_ignoring_them() {
    let s = start("").await;
    let config = std::fs::read_to_string(s.config_path()).unwrap();
    std::fs::write(s.config_path(), format!("{config}\n[routing]\nstrategy = \"random\"\n")).unwrap();
    let r = s.gw.http.post(format!("{}/v1/plugins/reload", s.gw.url)).send().await.unwrap();
    assert_eq!(r.status(), 200, "a start-up change does not refuse the reload");
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["restart_needed"], json!(["[routing] strategy"]), "{answer}");
    let list: Value = s.gw.get("/v1/plugins").await.json().await.unwrap();
    let events: Vec<&str> = list["events"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(events.iter().any(|e| e.ends_with("changed, restart needed: [routing] strategy")), "{events:?}");
    assert!(s.gw.log().contains("[routing] strategy changed: restart needed"), "{}", s.gw.log());
}
