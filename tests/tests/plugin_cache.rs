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
