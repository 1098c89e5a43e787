//! End-to-end: the Cohere adapter's golden fixtures pass against the built
//! component, through the gateway's own runtime (`freellm plugin check`).
//!
//! Cohere declares its own wire format (`cohere-chat-v2`), so the whole
//! report must pass with the OpenAI-shaped cases skipped by declaration.

use std::process::Output;

use freellm_e2e::*;

#[test]
fn every_cohere_fixture_passes_through_the_runtime() {
    let dir = workspace_root().join("providers/cohere/fixtures");
    let mut fixtures: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok()?.path().file_stem()?.to_str().map(str::to_owned))
        .collect();
    fixtures.sort();
    assert!(fixtures.len() >= 20, "only {} fixtures", fixtures.len());

    let Output { stdout, stderr, .. } = plugin_command("check")
        .arg(component_path("freellm-provider-cohere"))
        .arg("--fixtures")
        .arg(&dir)
        .output()
        .expect("freellm runs");
    let text = format!("{}{}", String::from_utf8_lossy(&stdout), String::from_utf8_lossy(&stderr));
    assert!(text.contains("PASS configure"), "{text}");
    assert!(text.contains("contract   freellm:provider@0.3.0"), "{text}");
    assert!(text.contains("SKIP openai-round-trip"), "{text}");
    assert!(text.contains("result: PASSED"), "{text}");
    assert!(text.contains("PASS malformed-input-does-not-trap"), "{text}");
    for fixture in &fixtures {
        assert!(text.contains(&format!("PASS {fixture}")), "{fixture}:\n{text}");
    }
}
