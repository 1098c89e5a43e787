use super::*;

fn model(id: &str, tags: ModelTags) -> ModelInfo {
    ModelInfo { id: id.into(), context_window: 0, tags, limits: None }
}

fn ids(selection: &Selection) -> Vec<String> {
    selection.targets.iter().map(|(p, m)| format!("{p}/{m}")).collect()
}

/// Three catalogs in registry order: `a` tags a fast default and a smart
/// model, `b` only smart models, `c` (a local server) tags nothing.
fn catalogs() -> (Vec<ModelInfo>, Vec<ModelInfo>, Vec<ModelInfo>) {
    let (fast, smart, vision) = (ModelTags::FAST, ModelTags::SMART, ModelTags::VISION);
    (
        vec![model("a-small", fast), model("a-big", smart), model("a-eyes", fast | vision)],
        vec![model("b-large", smart), model("b-huge", smart)],
        vec![model("llama3", ModelTags::empty()), model("llava", vision)],
    )
}

fn with<'a>(a: &'a [ModelInfo], b: &'a [ModelInfo], c: &'a [ModelInfo]) -> Vec<Catalog<'a>> {
    vec![
        Catalog { id: "a", default_model: "a-small", models: a },
        Catalog { id: "b", default_model: "b-huge", models: b },
        Catalog { id: "c", default_model: "llama3", models: c },
    ]
}

#[test]
fn free_takes_every_default_model_in_registry_order() {
    let (a, b, c) = catalogs();
    let s = select(&with(&a, &b, &c), MetaPick::Default, &[], false);
    assert_eq!(ids(&s), ["a/a-small", "b/b-huge", "c/llama3"]);
    assert!(s.left_out.is_empty());
}

#[test]
fn a_tagged_meta_model_takes_the_tagged_default_else_the_first_tagged_model() {
    let (a, b, c) = catalogs();
    let fast = select(&with(&a, &b, &c), MetaPick::Tagged(ModelTags::FAST), &[], false);
    // b tags models, none fast: left out; c tags none: joins with its default.
    assert_eq!(ids(&fast), ["a/a-small", "c/llama3"]);
    assert_eq!(fast.left_out, [("b".to_owned(), "declares no model tagged fast".to_owned())]);
    let smart = select(&with(&a, &b, &c), MetaPick::Tagged(ModelTags::SMART), &[], false);
    assert_eq!(ids(&smart), ["a/a-big", "b/b-huge", "c/llama3"]);
}

#[test]
fn the_operators_order_comes_first_and_unnamed_providers_follow_in_registry_order() {
    let (a, b, c) = catalogs();
    let order = vec!["c".to_owned(), "nowhere".to_owned(), "b".to_owned(), "c".to_owned()];
    let s = select(&with(&a, &b, &c), MetaPick::Default, &order, false);
    assert_eq!(ids(&s), ["c/llama3", "b/b-huge", "a/a-small"], "unknown and repeated names are ignored");
}

#[test]
fn an_image_request_prefers_a_qualifying_model_that_sees() {
    let (a, b, c) = catalogs();
    let s = select(&with(&a, &b, &c), MetaPick::Tagged(ModelTags::FAST), &[], true);
    assert_eq!(ids(&s), ["a/a-eyes", "c/llava"]);
    // Nothing that sees and qualifies: the usual pick (the router then says why it cannot serve).
    let s = select(&with(&a, &b, &c), MetaPick::Tagged(ModelTags::SMART), &[], true);
    assert_eq!(ids(&s), ["a/a-big", "b/b-huge", "c/llava"]);
}

#[test]
fn an_empty_catalog_serves_no_meta_model() {
    let none: Vec<ModelInfo> = Vec::new();
    let cats = [Catalog { id: "x", default_model: "whatever", models: &none }];
    for pick in [MetaPick::Default, MetaPick::Tagged(ModelTags::FAST)] {
        let s = select(&cats, pick, &[], false);
        assert!(s.targets.is_empty());
        assert_eq!(s.left_out, [("x".to_owned(), "has no models".to_owned())]);
    }
}

#[test]
fn a_meta_models_own_order_wins_over_the_common_one() {
    let order =
        MetaOrder { order: vec!["b".into()], by_meta: vec![("free-fast".into(), vec!["c".into(), "a".into()])] };
    assert_eq!(order.for_meta("free-fast"), ["c", "a"]);
    assert_eq!(order.for_meta("free-smart"), ["b"]);
    assert!(MetaOrder::default().for_meta("free").is_empty());
    assert!(is_meta_model("free-smart") && !is_meta_model("my-chat"));
}

/// A provider of the in-process bench with the given `models` entries
/// (`name|context_window|tags`).
fn bench_provider(id: &str, models: &[&str]) -> String {
    format!(
        "[providers.{id}]\ncomponent = {component:?}\n[providers.{id}.settings]\n\
         base_url = \"http://{id}.test/v1\"\nmodels = {models:?}\nprivacy = \"local\"\nrpm = 1000\n\n",
        component = crate::testing::component("freellm-provider-openai-compatible").display().to_string(),
    )
}

#[tokio::test(start_paused = true)]
async fn meta_models_follow_declared_tags_and_the_configured_order() {
    use crate::testing::{Bench, Reply};
    // Registry order: small, then big. `big` declares only smart models.
    let toml = format!(
        "{}{}[routing]\norder = [\"big\"]\n[routing.order_by_meta]\nfree-fast = [\"small\"]\n",
        bench_provider("small", &["s-smart|0|smart", "s-fast|0|fast"]),
        bench_provider("big", &["b-smart|0|smart+tools"]),
    );
    let bench = Bench::start(&toml, &[("SMALL_API_KEY", "k"), ("BIG_API_KEY", "k")]).await;
    bench.upstream.always("small.test", Reply::completion("from small"));
    bench.upstream.always("big.test", Reply::completion("from big"));
    for (meta, answered) in [("free", "big/b-smart"), ("free-smart", "big/b-smart"), ("free-fast", "small/s-fast")] {
        let answer = bench.chat(meta, false).await;
        assert_eq!(answer.status, 200, "{meta}: {}", answer.text());
        assert_eq!(answer.header("x-freellm-model"), answered, "{meta}");
        assert_eq!(answer.header("x-freellm-route-reason"), "meta", "{meta}");
    }
    // `big` tags models but none fast: free-fast never tries it.
    bench.upstream.always("small.test", Reply::error(503, "down"));
    let down = bench.chat("free-fast", false).await;
    assert_eq!(down.status, 429, "{}", down.text());
    let attempts = down.json()["error"]["attempts"].as_array().cloned().unwrap_or_default();
    assert!(!attempts.is_empty() && attempts.iter().all(|a| a["provider"] == "small"), "{}", down.text());
    assert_eq!(bench.upstream.count("big.test"), 2, "big served free and free-smart only");
}
