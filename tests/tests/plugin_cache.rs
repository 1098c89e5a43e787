//! End-to-end: components are compiled once and cached on disk by content
//! hash, so a restart compiles nothing.

use freellm_e2e::*;

#[tokio::test]
async fn a_restart_reuses_the_compiled_component() {
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().to_string_lossy().to_string();
    let start = || {
        Gateway::start_with(GatewayOptions {
            config: default_config(),
            env: vec![("GROQ_API_KEY".into(), "k".into()), ("FREELLM_CACHE_DIR".into(), cache_dir.clone())],
        })
    };
    let first = start().await;
    let entries = || -> Vec<(std::path::PathBuf, std::time::SystemTime)> {
        let mut v: Vec<_> = std::fs::read_dir(cache.path())
            .unwrap()
            .map(|e| e.unwrap())
            .map(|e| (e.path(), e.metadata().unwrap().modified().unwrap()))
            .collect();
        v.sort();
        v
    };
    let after_first = entries();
    assert_eq!(after_first.len(), 2, "one .cwasm per component: {after_first:?}");
    assert!(after_first.iter().all(|(p, _)| p.extension().is_some_and(|e| e == "cwasm")));
    drop(first);
    let _second = start().await;
    assert_eq!(entries(), after_first, "nothing recompiled or rewritten");
}

/// Eighteen provider slots sharing one component file, started with an empty
/// cache: the component is compiled once (the other slots wait for that
/// compilation), every slot is live, and the cache holds one file and no
/// leftover temporary files.
#[tokio::test]
async fn slots_sharing_a_component_compile_it_once() {
    let cache = tempfile::tempdir().unwrap();
    let mut config = String::new();
    for i in 0..18 {
        config.push_str(&format!(
            "[providers.lab{i}]\ncomponent = \"{{component:freellm-provider-openai-compatible}}\"\n\
             key_env = \"LAB_API_KEY\"\n\
             [providers.lab{i}.settings]\nbase_url = \"http://127.0.0.1:9/v1\"\nmodels = [\"m{i}\"]\n\n"
        ));
    }
    let gw = Gateway::start_with(GatewayOptions {
        config,
        env: vec![
            ("LAB_API_KEY".into(), "k".into()),
            ("FREELLM_CACHE_DIR".into(), cache.path().to_string_lossy().to_string()),
        ],
    })
    .await;
    let log = gw.log();
    assert_eq!(log.matches("component compiled").count(), 1, "{log}");
    assert!(!log.contains("cannot write the compiled-component cache"), "{log}");
    let models: serde_json::Value = gw.get("/v1/models").await.json().await.unwrap();
    for i in 0..18 {
        let id = format!("lab{i}/m{i}");
        assert!(models["data"].as_array().unwrap().iter().any(|m| m["id"] == id.as_str()), "{id} missing: {models}");
    }
    let files: Vec<_> = std::fs::read_dir(cache.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(files.len(), 1, "one compiled file, no temporary files: {files:?}");
}
