//! End-to-end: `freellm plugin new` writes an adapter crate that, unmodified,
//! passes its own native tests, builds for wasm32-wasip2, passes `freellm
//! plugin check` with its fixtures, and serves through a gateway; both
//! templates (an API of its own shape, and `--openai-compatible`). A broken
//! fixture fails the check naming the fixture, the contract function and
//! the first difference.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use freellm_e2e::*;
use serde_json::{Value, json};

/// Runs a command, returning whether it succeeded and its whole output.
fn run(cmd: &mut Command) -> (bool, String) {
    let Output { status, stdout, stderr } = cmd.output().expect("command runs");
    (status.success(), format!("{}{}", String::from_utf8_lossy(&stdout), String::from_utf8_lossy(&stderr)))
}

/// Cargo for the scaffolded crate: its own manifest, a target directory
/// both crates share, offline (its lock file is the workspace's, whose
/// crates are already here), and none of the variables cargo set for this
/// test process.
fn cargo(manifest: &Path, target_dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("CARGO_") && name != "CARGO_HOME" {
            cmd.env_remove(&*name);
        }
    }
    cmd.args(args).arg("--offline").arg("--manifest-path").arg(manifest).arg("--target-dir").arg(target_dir);
    cmd
}

fn plugin_check(component: &Path, fixtures: &Path) -> (bool, String) {
    run(plugin_command("check").arg(component).arg("--fixtures").arg(fixtures))
}

/// Scaffolds `name`, runs its tests, builds its component and checks it;
/// returns the crate's folder and the component.
fn scaffold_build_check(root: &Path, target_dir: &Path, name: &str, openai: bool) -> (PathBuf, PathBuf) {
    let mut new = Command::new(build_artifacts());
    new.args(["plugin", "new", name, "--dir"]).arg(root);
    if openai {
        new.arg("--openai-compatible");
    }
    let (ok, out) = run(&mut new);
    assert!(ok, "plugin new {name}:\n{out}");
    assert!(out.contains("freellm-sdk: the checkout's, by path"), "inside the repository the SDK is a path:\n{out}");
    let dir = root.join(name);
    let manifest = dir.join("Cargo.toml");

    let (ok, out) = run(&mut cargo(&manifest, target_dir, &["test", "--quiet"]));
    assert!(ok, "{name}: the scaffold's own tests:\n{out}");
    assert!(out.contains("2 passed"), "{name}: both tests ran:\n{out}");

    let wasm_build = ["build", "--quiet", "--profile", "wasm", "--target", "wasm32-wasip2"];
    let (ok, out) = run(&mut cargo(&manifest, target_dir, &wasm_build));
    assert!(ok, "{name}: wasm build:\n{out}");
    let component =
        target_dir.join("wasm32-wasip2/wasm").join(format!("freellm_adapter_{}.wasm", name.replace('-', "_")));

    let (ok, text) = plugin_check(&component, &dir.join("fixtures"));
    assert!(ok, "{name}: plugin check:\n{text}");
    assert!(text.contains("contract   freellm:provider@0.3.0"), "{text}");
    assert!(text.contains("result: PASSED") && text.contains("embedded fixtures"), "{text}");
    assert!(text.contains("PASS malformed-input-does-not-trap") && text.contains("PASS stream-text"), "{text}");
    if openai {
        assert!(text.contains("wire format openai-chat") && text.contains("PASS openai-round-trip"), "{text}");
    } else {
        assert!(text.contains(&format!("wire format other({name}-messages)")), "{text}");
        assert!(text.contains("SKIP openai-round-trip: wire format other"), "{text}");
    }
    (dir, component)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scaffolded_adapter_passes_plugin_check_and_serves_unmodified() {
    build_artifacts();
    let root = workspace_root().join("target/scaffold-e2e");
    let _ = std::fs::remove_dir_all(&root);
    // The workspace's own target directory: the component build then reuses
    // the dependencies the workspace's components were built with (serde,
    // wit-bindgen and its macros), and compiles only the SDK and the crate.
    // The native test build uses the crate's own profile, so it shares
    // nothing with the workspace's and is compiled beside it.
    let target_dir = workspace_root().join("target");
    let (acme_dir, acme) = tokio::task::spawn_blocking({
        let (root, target_dir) = (root.clone(), target_dir.clone());
        move || scaffold_build_check(&root, &target_dir, "acme", false)
    })
    .await
    .unwrap();
    let (_, openai) = tokio::task::spawn_blocking({
        let (root, target_dir) = (root.clone(), target_dir.clone());
        move || scaffold_build_check(&root, &target_dir, "acme-openai", true)
    })
    .await
    .unwrap();

    // A wrong fixture: the report names it, the contract function and the
    // first difference.
    let wrong = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(acme_dir.join("fixtures/map-system-and-turns.json")).unwrap();
    std::fs::write(
        wrong.path().join("map-wrong.json"),
        text.replace("\"max_tokens\": 16,\n        \"stop\"", "\"max_tokens\": 17,\n        \"stop\""),
    )
    .unwrap();
    let (ok, text) = plugin_check(&acme, wrong.path());
    assert!(!ok, "{text}");
    assert!(text.contains("FAIL map-wrong: map-request: body $.max_tokens: expected 17, got 16"), "{text}");

    // Both serve through a gateway: the acme one speaks its own API.
    let upstream = MockUpstream::start(|r| {
        if r.path == "/v1/messages" {
            Reply::ok(json!({"id": "msg_1", "text": "Hello from acme", "stop_reason": "end",
                             "usage": {"input_tokens": 5, "output_tokens": 3}}))
        } else {
            Reply::ok(completion("acme-openai-small", "Hello from acme-openai"))
        }
    })
    .await;
    let config = format!(
        "[providers.acme]\ncomponent = \"{}\"\nbase_url = \"{url}\"\n\n\
         [providers.acme-openai]\ncomponent = \"{}\"\nbase_url = \"{url}\"\n",
        acme.display(),
        openai.display(),
        url = upstream.url,
    );
    let gw = Gateway::start_with(GatewayOptions {
        config,
        env: vec![
            ("ACME_API_KEY".into(), "acme-test-key-0001".into()),
            ("ACME_OPENAI_API_KEY".into(), "acme-openai-test-key-0001".into()),
        ],
    })
    .await;
    let r = gw.chat(chat_body("acme/acme-small")).await;
    assert_eq!(r.status(), 200, "{}", gw.log());
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["choices"][0]["message"]["content"], "Hello from acme", "{answer}");
    assert!(answer["created"].as_u64().unwrap() > 0, "the host fills created: {answer}");
    let sent = upstream.requests().last().cloned().unwrap();
    assert_eq!((sent.path.as_str(), sent.header("x-api-key").as_deref()), ("/v1/messages", Some("acme-test-key-0001")));
    assert_eq!(sent.json()["messages"], json!([{"role": "user", "text": "Hi"}]));

    let r = gw.chat(chat_body("acme-openai/acme-openai-small")).await;
    assert_eq!(r.status(), 200, "{}", gw.log());
    assert_eq!(upstream.requests().last().unwrap().path, "/chat/completions");

    let plugins: Value = gw.get("/v1/plugins").await.json().await.unwrap();
    let text = plugins.to_string();
    assert!(text.contains("\"acme\"") && text.contains("\"acme-openai\""), "{plugins}");
}
