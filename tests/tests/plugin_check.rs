//! End-to-end: `freellm plugin check` runs the conformance cases and every
//! provider's golden fixtures against the built components, through the
//! gateway's own runtime, and reports readable differences.

use std::path::{Path, PathBuf};
use std::process::Output;

use freellm_e2e::*;

/// (provider directory, component crate, settings for the conformance cases)
const PROVIDERS: &[(&str, &str, &[&str])] = &[
    ("groq", "freellm-provider-groq", &[]),
    ("gemini", "freellm-provider-gemini", &[]),
    ("mistral", "freellm-provider-mistral", &[]),
    ("cerebras", "freellm-provider-cerebras", &[]),
    ("nim", "freellm-provider-nim", &[]),
    ("ollama", "freellm-provider-ollama", &["models=llama3.1,llava"]),
    (
        "openai-compatible",
        "freellm-provider-openai-compatible",
        &["id=openrouter", "base_url=https://openrouter.ai/api/v1", "models=meta-llama/llama-3.3-70b-instruct:free"],
    ),
];

fn check(component: &Path, fixtures: Option<&Path>, settings: &[&str]) -> (bool, String) {
    let mut cmd = plugin_command("check");
    cmd.arg(component);
    if let Some(dir) = fixtures {
        cmd.arg("--fixtures").arg(dir);
    }
    for s in settings {
        cmd.arg("--setting").arg(s);
    }
    let Output { status, stdout, stderr } = cmd.output().expect("freellm runs");
    let text = format!("{}{}", String::from_utf8_lossy(&stdout), String::from_utf8_lossy(&stderr));
    (status.success(), text)
}

fn fixtures_dir(provider: &str) -> PathBuf {
    workspace_root().join("providers").join(provider).join("fixtures")
}

#[test]
fn every_adapter_passes_conformance_and_its_fixtures_through_the_runtime() {
    for (provider, krate, settings) in PROVIDERS {
        let dir = fixtures_dir(provider);
        let fixture_count = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .filter(|e| e.as_ref().is_ok_and(|e| e.path().extension().is_some_and(|x| x == "json")))
            .count();
        assert!(fixture_count >= 5, "{provider}: only {fixture_count} fixtures");
        let (ok, text) = check(&component_path(krate), Some(&dir), settings);
        assert!(ok, "{provider}:\n{text}");
        assert!(text.contains("result: PASSED"), "{provider}:\n{text}");
        assert!(text.contains("PASS malformed-input-does-not-trap"), "{provider}:\n{text}");
        assert!(text.contains("contract   freellm:provider@0.3.0"), "{provider}:\n{text}");
        assert!(text.contains("PASS openai-round-trip"), "{provider} declares openai-chat:\n{text}");
        // configure and ten cases, each passed or skipped by declaration.
        let ran = text.matches("  PASS ").count() + text.matches("  SKIP ").count();
        assert_eq!(ran, 11 + fixture_count, "{provider}: every case ran\n{text}");
    }
}

#[test]
fn a_wrong_fixture_fails_with_the_first_difference() {
    let broken = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixtures_dir("groq")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, broken.path().join(path.file_name().unwrap())).unwrap();
    }
    // A fixture that claims groq keeps `logit_bias`, which it drops.
    std::fs::write(
        broken.path().join("zz-deliberately-wrong.json"),
        r#"{
          "description": "wrong on purpose: groq drops logit_bias",
          "model": "llama-3.1-8b-instant",
          "map": {
            "request": {"model": "groq/llama-3.1-8b-instant", "messages": [{"role": "user", "content": "Hi"}], "logit_bias": {"50256": -100}},
            "expect": {
              "method": "POST",
              "url": "https://api.groq.com/openai/v1/chat/completions",
              "headers": {"authorization": "Bearer fixture-key", "content-type": "application/json"},
              "body": {"model": "llama-3.1-8b-instant", "messages": [{"role": "user", "content": "Hi"}], "logit_bias": {"50256": -100}}
            }
          }
        }"#,
    )
    .unwrap();
    let (ok, text) = check(&component_path("freellm-provider-groq"), Some(broken.path()), &[]);
    assert!(!ok, "{text}");
    assert!(
        text.contains(
            "FAIL zz-deliberately-wrong: map-request: body $.logit_bias: expected {\"50256\":-100}, got (missing)"
        ),
        "{text}"
    );
    assert!(text.contains("result: FAILED (") && text.contains(" 1 failed)"), "{text}");
}

#[test]
fn a_component_that_panics_fails_conformance_without_crashing_the_checker() {
    let (ok, text) = check(&component_path("freellm-provider-hostile"), None, &["normalize=panic"]);
    assert!(!ok, "{text}");
    assert!(text.contains("FAIL openai-round-trip: normalize-response failed: adapter-fault"), "{text}");
    assert!(text.contains("PASS classify-401"), "the other cases still ran:\n{text}");
}

#[test]
fn a_file_that_is_not_a_component_fails_the_load_step() {
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("bogus.wasm");
    std::fs::write(&bogus, b"\0asm not really").unwrap();
    let (ok, text) = check(&bogus, None, &[]);
    assert!(!ok);
    assert!(text.contains("FAIL load: compile"), "{text}");
    let (ok, text) = check(&dir.path().join("missing.wasm"), None, &[]);
    assert!(!ok);
    assert!(text.contains("FAIL load: read"), "{text}");
}

#[test]
fn a_generic_adapter_without_settings_fails_configure_clearly() {
    let (ok, text) = check(&component_path("freellm-provider-openai-compatible"), None, &[]);
    assert!(!ok, "{text}");
    assert!(text.contains("FAIL configure"), "{text}");
}
