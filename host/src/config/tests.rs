use super::*;

fn load(toml: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let file: FileConfig =
        toml::from_str(toml).map_err(|e| ConfigError::Parse { path: "t".into(), message: e.to_string() })?;
    Config::build(file, Path::new("/cfg"), env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
}

const TWO: &str = r#"
        [providers.groq]
        component = "groq.wasm"
        [providers.ollama]
        component = "/abs/ollama.wasm"
        settings = { models = ["a", "b"] }
        settings_env = { models = "OLLAMA_MODELS" }
    "#;

#[test]
fn a_reload_names_the_start_up_settings_that_changed_and_ignores_live_sections() {
    let running = load(TWO, &[]).unwrap();
    let same_but_routes = format!("{TWO}\n[routes.fast]\ntargets = [\"groq\"]\n");
    assert!(running.startup_changes(&load(&same_but_routes, &[]).unwrap()).is_empty());
    let edited = format!("[server]\nport = 4000\n[routing]\nstrategy = \"random\"\n{TWO}");
    assert_eq!(running.startup_changes(&load(&edited, &[]).unwrap()), ["[server] port", "[routing] strategy"]);
}

#[test]
fn server_connection_limits_default_read_the_file_and_env_wins() {
    assert_eq!(load(TWO, &[]).unwrap().edge, EdgeConfig::default());
    let file = "[server]\nmax_control_body_bytes = 1024\nidle_timeout_ms = 700\nshutdown_grace_ms = 900\nwrite_stall_timeout_ms = 400\n";
    let c = load(file, &[("FREELLM_SHUTDOWN_GRACE_MS", "1500"), ("FREELLM_MAX_CONNECTIONS", "8")]).unwrap();
    assert_eq!(c.edge.max_control_body_bytes, 1024);
    assert_eq!(c.edge.idle_timeout, Duration::from_millis(700));
    assert_eq!(c.edge.write_stall_timeout, Duration::from_millis(400));
    assert_eq!(c.edge.shutdown_grace, Duration::from_millis(1500));
    assert_eq!(c.edge.max_connections, 8);
    let c = load(file, &[("FREELLM_WRITE_STALL_TIMEOUT_MS", "2500")]).unwrap();
    assert_eq!(c.edge.write_stall_timeout, Duration::from_millis(2500));
    for bad in [
        ("FREELLM_MAX_CONNECTIONS", "0"),
        ("FREELLM_BODY_READ_TIMEOUT_MS", "x"),
        ("FREELLM_WRITE_STALL_TIMEOUT_MS", "0"),
    ] {
        assert!(load(TWO, &[bad]).is_err(), "{bad:?} must be refused");
    }
}

#[test]
fn the_stream_budget_is_capped_by_the_instance_pool() {
    let max = freellm_runtime::MAX_OPEN_STREAMS as usize;
    assert_eq!(load(TWO, &[]).unwrap().edge.max_streams, 10_000);
    assert_eq!(load(TWO, &[("FREELLM_MAX_STREAMS", &max.to_string())]).unwrap().edge.max_streams, max);
    assert_eq!(load("[server]\nmax_streams = 100\n", &[]).unwrap().edge.max_streams, 100);
    assert_eq!(load(TWO, &[("FREELLM_MAX_STREAMS", "7")]).unwrap().edge.max_streams, 7);
    for bad in ["0", "x", &(max + 1).to_string()] {
        let e = load(TWO, &[("FREELLM_MAX_STREAMS", bad)]).expect_err(bad).to_string();
        assert!(e.contains("FREELLM_MAX_STREAMS"), "{e}");
    }
}

#[test]
fn defaults_apply_and_providers_keep_file_order() {
    let c = load(TWO, &[]).unwrap();
    assert_eq!(c.port, 3000);
    assert_eq!(c.host.to_string(), "127.0.0.1");
    assert_eq!(c.max_body_bytes, 2 << 20);
    assert_eq!(c.providers.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(), ["groq", "ollama"]);
    assert_eq!(c.providers[0].component, Path::new("/cfg/groq.wasm"));
    assert_eq!(c.providers[1].settings, vec![("models".to_owned(), "a,b".to_owned())]);
    assert_eq!(c.cache_dir, Path::new("/cfg/data/components"));
}

#[test]
fn environment_wins_over_the_file() {
    let c =
        load(TWO, &[("PORT", "4000"), ("OLLAMA_MODELS", "x,y"), ("GROQ_BASE_URL", "http://127.0.0.1:9/v1/")]).unwrap();
    assert_eq!(c.port, 4000);
    assert_eq!(c.providers[1].settings, vec![("models".to_owned(), "x,y".to_owned())]);
    assert_eq!(c.providers[0].base_url.as_deref(), Some("http://127.0.0.1:9/v1"));
}

#[test]
fn keys_are_split_trimmed_and_empty_entries_dropped() {
    let c = load(TWO, &[("GROQ_API_KEY", " k1, ,k2 ,")]).unwrap();
    assert_eq!(c.keys_from("GROQ_API_KEY"), ["k1", "k2"]);
    assert!(c.keys_from("MISSING").is_empty());
}

#[test]
fn bad_values_are_named_in_the_error() {
    let e = load(TWO, &[("PORT", "http")]).unwrap_err();
    assert!(e.to_string().contains("PORT"), "{e}");
    let e = load(TWO, &[("GROQ_BASE_URL", "ftp://x")]).unwrap_err();
    assert!(e.to_string().contains("GROQ_BASE_URL"), "{e}");
    let e = load("[providers.x]\ncomponent='a'\ncolour='red'\n", &[]).unwrap_err();
    assert!(e.to_string().contains("colour"), "{e}");
    let e = load("[providers.Bad]\ncomponent='a'\n", &[]).unwrap_err();
    assert!(e.to_string().contains("providers.Bad"), "{e}");
}

#[test]
fn stream_bounds_have_defaults_file_values_and_env_overrides() {
    let d = load(TWO, &[]).unwrap().upstream;
    assert_eq!(d.stream_max_event_bytes, 1 << 20);
    assert_eq!(d.stream_max_bytes, 64 << 20);
    assert_eq!(d.stream_max_duration, Duration::from_secs(1800));
    assert_eq!(d.stream_continuation_max_bytes, 256 << 10);
    let text = format!(
        "[upstream]\nstream_max_event_bytes = 4096\nstream_max_bytes = 100000\n\
             stream_max_duration_ms = 5000\nstream_continuation_max_bytes = 0\n{TWO}"
    );
    let f = load(&text, &[]).unwrap().upstream;
    assert_eq!(
        (f.stream_max_event_bytes, f.stream_max_bytes, f.stream_max_duration, f.stream_continuation_max_bytes),
        (4096, 100_000, Duration::from_secs(5), 0)
    );
    let e = load(&text, &[("STREAM_MAX_BYTES", "7"), ("STREAM_MAX_EVENT_BYTES", "9")]).unwrap().upstream;
    assert_eq!((e.stream_max_bytes, e.stream_max_event_bytes), (7, 9));
    for (name, bad) in [
        ("STREAM_MAX_EVENT_BYTES", "0"),
        ("STREAM_MAX_BYTES", "0"),
        ("STREAM_MAX_DURATION_MS", "0"),
        ("STREAM_MAX_BYTES", "lots"),
    ] {
        let e = load(TWO, &[(name, bad)]).unwrap_err();
        assert!(e.to_string().contains(name), "{e}");
    }
}

#[test]
fn access_settings_have_safe_defaults_and_the_environment_wins() {
    let c = load(TWO, &[]).unwrap();
    assert_eq!(c.max_event_feeds_per_principal, 8);
    assert_eq!(c.cache.scope, CacheScope::Tenant);
    assert!(c.allowed_hosts.allows(Some("localhost:3000")));
    assert!(!c.allowed_hosts.allows(Some("evil.example")));
    let file = format!(
        "[server]\nallowed_hosts = [\"gw.example\"]\nmax_event_feeds_per_principal = 2\n[cache]\nscope = \"shared\"\n{TWO}"
    );
    let c = load(&file, &[]).unwrap();
    assert_eq!((c.max_event_feeds_per_principal, c.cache.scope), (2, CacheScope::Shared));
    assert!(c.allowed_hosts.allows(Some("gw.example")) && !c.allowed_hosts.allows(Some("localhost")));
    let c = load(
        &file,
        &[
            ("FREELLM_ALLOWED_HOSTS", "other.example, localhost"),
            ("FREELLM_MAX_EVENT_FEEDS", "3"),
            ("CACHE_SCOPE", "tenant"),
        ],
    )
    .unwrap();
    assert_eq!((c.max_event_feeds_per_principal, c.cache.scope), (3, CacheScope::Tenant));
    assert!(c.allowed_hosts.allows(Some("localhost:1")) && !c.allowed_hosts.allows(Some("gw.example")));
    assert!(load(TWO, &[("HOST", "0.0.0.0")]).unwrap().allowed_hosts.allows(Some("anything.example")));
    for bad in [("FREELLM_MAX_EVENT_FEEDS", "0"), ("CACHE_SCOPE", "global"), ("FREELLM_ALLOWED_HOSTS", "a b")] {
        let e = load(TWO, &[bad]).unwrap_err();
        assert!(e.to_string().contains(bad.0), "{e}");
    }
    assert!(load("[server]\nallowed_hosts = []\n", &[]).is_err());
    assert!(load("[cache]\nttl = 1\n", &[]).is_err());
}

#[test]
fn zero_idle_timeout_disables_heartbeats() {
    let c = load(TWO, &[("STREAM_IDLE_TIMEOUT_MS", "0")]).unwrap();
    assert!(c.upstream.stream_idle_timeout.is_none());
}

#[test]
fn routes_and_routing_are_read_and_checked() {
    let text = format!(
        "{TWO}\n[routing]\nstrategy = \"round_robin\"\ntransient_retries = 2\n\
             [routes.my-chat]\ntargets = [\"groq/llama-3.3-70b-versatile\", \"ollama\"]\nretries = 0\n\
             context_fallbacks = [\"gemini/gemini-2.5-pro\"]\n"
    );
    let c = load(&text, &[]).unwrap();
    assert_eq!(c.strategy, Strategy::RoundRobin);
    assert_eq!(c.routing.retries, Retries::transient(2));
    assert_eq!(c.routes.len(), 1);
    assert_eq!(c.routes[0].name, "my-chat");
    assert_eq!(c.routes[0].targets, ["groq/llama-3.3-70b-versatile", "ollama"]);
    assert_eq!(c.routes[0].retries, Some(0));
    assert_eq!(c.routes[0].context_fallbacks, ["gemini/gemini-2.5-pro"]);
    let env = load(&text, &[("ROUTING_STRATEGY", "random")]).unwrap();
    assert_eq!(env.strategy, Strategy::Random);
    assert_eq!(load(TWO, &[]).unwrap().strategy, Strategy::QuotaAware);

    for bad in [
        "[routes.x]\ntargets = []\n",
        "[routes.x]\ntargets = [\"/m\"]\n",
        "[routes.x]\ntargets = [\"groq\"]\nstrategy = \"fastest\"\n",
        "[routes.x]\ntargets = [\"groq\"]\nbogus = 1\n",
        "[routing]\ntransient_retries = 50\n",
    ] {
        assert!(load(bad, &[]).is_err(), "{bad}");
    }
    assert!(load(TWO, &[("ROUTING_STRATEGY", "fastest")]).is_err());
    let defaults = load(TWO, &[]).unwrap().routing;
    assert_eq!((defaults.canary_min_calls, defaults.canary_margin), (20, 0.2));
    let tuned = load(TWO, &[("CANARY_MIN_CALLS", "50"), ("CANARY_MARGIN", "0.05")]).unwrap().routing;
    assert_eq!((tuned.canary_min_calls, tuned.canary_margin), (50, 0.05));
    assert!(load(TWO, &[("CANARY_MARGIN", "2")]).is_err());
    assert!(load(TWO, &[("CANARY_MIN_CALLS", "some")]).is_err());
    assert!(load(TWO, &[("CB_FAILURE_THRESHOLD", "zero")]).is_err());
}

#[test]
fn the_meta_model_order_is_read_checked_and_a_live_section() {
    let running = load(TWO, &[]).unwrap();
    assert_eq!(running.meta_order, MetaOrder::default(), "no order: registry order");
    let ordered =
        format!("[routing]\norder = [\"ollama\", \"groq\"]\n[routing.order_by_meta]\nfree-fast = [\"groq\"]\n{TWO}");
    let c = load(&ordered, &[]).unwrap();
    assert_eq!(c.meta_order.order, ["ollama", "groq"]);
    assert_eq!(c.meta_order.for_meta("free-fast"), ["groq"]);
    assert_eq!(c.meta_order.for_meta("free-smart"), ["ollama", "groq"]);
    assert!(running.startup_changes(&c).is_empty(), "the order applies live, like the routes");
    let unknown_meta = format!("[routing.order_by_meta]\nfree-huge = [\"groq\"]\n{TWO}");
    assert!(load(&unknown_meta, &[]).unwrap_err().to_string().contains("not a built-in meta-model"));
    let bad_id = format!("[routing]\norder = [\"Groq!\"]\n{TWO}");
    assert!(load(&bad_id, &[]).unwrap_err().to_string().contains("not a provider id"));
}

#[test]
fn a_glob_route_with_placeholders_loads_and_a_bad_one_is_refused_naming_the_route() {
    let text = format!(
        "{TWO}\n[routes.\"team-*\"]\ntargets = [\"groq/{{model}}\", \"groq/{{1}}\", \"ollama\"]\n\
         context_fallbacks = [\"groq/{{model}}-long\"]\n"
    );
    let c = load(&text, &[]).unwrap();
    assert_eq!(c.routes[0].name, "team-*");
    assert_eq!(c.routes[0].targets, ["groq/{model}", "groq/{1}", "ollama"]);
    for (bad, needle) in [
        ("[routes.chat]\ntargets = [\"groq/{1}\"]\n", "at least 1"),
        ("[routes.\"team-*\"]\ntargets = [\"groq/{name}\"]\n", "unknown placeholder"),
        ("[routes.\"team-*\"]\ntargets = [\"{model}\"]\n", "model part"),
        ("[routes.\"team-*\"]\ntargets = [\"groq/{model\"]\n", "unclosed"),
    ] {
        let err = load(bad, &[]).expect_err(bad).to_string();
        assert!(err.contains(needle) && err.contains("routes."), "{bad}: {err}");
    }
}

/// The error of loading `toml` (with `env`), which must name `name`.
fn refused_naming(toml: &str, env: &[(&str, &str)], name: &str) {
    let e = load(toml, env).expect_err(toml).to_string();
    assert!(e.contains(name), "{toml} {env:?}: {e}");
}

#[test]
fn a_bad_server_or_upstream_value_is_named_where_it_was_set() {
    for (section, key) in [
        ("server", "max_body_bytes"),
        ("server", "max_event_feeds_per_principal"),
        ("server", "max_connections"),
        ("server", "max_streams"),
        ("server", "shutdown_grace_ms"),
        ("upstream", "connect_timeout_ms"),
        ("upstream", "route_timeout_ms"),
        ("upstream", "stream_max_bytes"),
    ] {
        let text = format!("[{section}]\n{key} = 0\n{TWO}");
        refused_naming(&text, &[], &format!("[{section}] {key}"));
    }
    let max = freellm_runtime::MAX_OPEN_STREAMS as usize + 1;
    refused_naming(&format!("[server]\nmax_streams = {max}\n"), &[], "[server] max_streams");
    // The variable wins, and a bad one is named as the variable.
    refused_naming("[server]\nmax_connections = 0\n", &[("FREELLM_MAX_CONNECTIONS", "x")], "FREELLM_MAX_CONNECTIONS");
    assert_eq!(
        load("[server]\nmax_connections = 0\n", &[("FREELLM_MAX_CONNECTIONS", "5")]).unwrap().edge.max_connections,
        5
    );
    // Zero where zero means "off" is taken from the file.
    let text = format!("[upstream]\nstream_idle_timeout_ms = 0\n{TWO}");
    assert_eq!(load(&text, &[]).unwrap().upstream.stream_idle_timeout, None);
}

#[test]
fn the_cache_is_set_in_the_file_the_environment_wins_and_a_bad_value_names_its_key() {
    let file = "[cache]\nenabled = false\nttl_ms = 5000\nmax_entries = 7\nscope = \"shared\"\n";
    let c = load(file, &[]).unwrap().cache;
    assert_eq!((c.enabled, c.ttl, c.max_entries, c.scope), (false, Duration::from_secs(5), 7, CacheScope::Shared));
    let e = load(file, &[("CACHE_ENABLED", "on"), ("CACHE_TTL_MS", "9"), ("CACHE_MAX_ENTRIES", "3")]).unwrap().cache;
    assert_eq!((e.enabled, e.ttl, e.max_entries), (true, Duration::from_millis(9), 3));
    refused_naming("[cache]\nttl_ms = 0\n", &[], "[cache] ttl_ms");
    refused_naming("[cache]\nscope = \"everyone\"\n", &[], "[cache] scope");
    refused_naming("[cache]\nenabled = \"maybe\"\n", &[], "enabled");
    refused_naming(file, &[("CACHE_TTL_MS", "0")], "CACHE_TTL_MS");
    refused_naming(file, &[("CACHE_ENABLED", "maybe")], "CACHE_ENABLED");
}

#[test]
fn the_breaker_is_set_in_the_file_the_environment_wins_and_a_bad_value_names_its_key() {
    assert_eq!(load(TWO, &[]).unwrap().routing.breaker, BreakerConfig::default());
    let file =
        "[breaker]\nfailure_threshold = 5\nsuccess_threshold = 1\nopen_timeout_ms = 1000\nmax_open_timeout_ms = 8000\n";
    let b = load(file, &[]).unwrap().routing.breaker;
    assert_eq!(
        (b.failure_threshold, b.success_threshold, b.open_timeout, b.max_open_timeout),
        (5, 1, Duration::from_secs(1), Duration::from_secs(8))
    );
    let e = load(file, &[("CB_FAILURE_THRESHOLD", "9"), ("CB_MAX_TIMEOUT_MS", "2000")]).unwrap().routing.breaker;
    assert_eq!((e.failure_threshold, e.success_threshold, e.max_open_timeout), (9, 1, Duration::from_secs(2)));
    refused_naming("[breaker]\nfailure_threshold = 0\n", &[], "[breaker] failure_threshold");
    refused_naming("[breaker]\nopen_timeout_ms = 0\n", &[], "[breaker] open_timeout_ms");
    refused_naming("[breaker]\nhalf_open = 1\n", &[], "half_open");
    refused_naming(file, &[("CB_TIMEOUT_MS", "soon")], "CB_TIMEOUT_MS");
}

#[test]
fn client_limits_are_set_in_the_file_the_environment_wins_and_a_bad_value_names_its_key() {
    assert_eq!(load(TWO, &[]).unwrap().clients, ClientsConfig::default());
    let file =
        "[limits]\nidentifier_limit = \"5/2000\"\nidentifier_max_buckets = 50\nper_ip_rpm = 30\ntrust_proxy = true\n";
    let c = load(file, &[]).unwrap().clients;
    assert_eq!(c.identifier_limit, Some(IdentifierLimit { max: 5, window_ms: 2000 }));
    assert_eq!((c.identifier_max_buckets, c.per_ip_rpm, c.trust_proxy), (50, Some(30), true));
    let table = load("[limits]\nidentifier_limit = { max = 60, window_ms = 60000 }\n", &[]).unwrap().clients;
    assert_eq!(table.identifier_limit, Some(IdentifierLimit { max: 60, window_ms: 60_000 }));
    let e = load(
        file,
        &[
            ("FREELLM_IDENTIFIER_LIMIT", "7/1000"),
            ("FREELLM_IDENTIFIER_MAX_BUCKETS", "9"),
            ("RATE_LIMIT_RPM", "0"),
            ("TRUST_PROXY", "false"),
        ],
    )
    .unwrap()
    .clients;
    assert_eq!(e.identifier_limit, Some(IdentifierLimit { max: 7, window_ms: 1000 }));
    assert_eq!((e.identifier_max_buckets, e.per_ip_rpm, e.trust_proxy), (9, None, false), "RATE_LIMIT_RPM=0: off");
    refused_naming("[limits]\nidentifier_limit = \"sixty\"\n", &[], "[limits] identifier_limit");
    refused_naming("[limits]\nidentifier_limit = { max = 0, window_ms = 1000 }\n", &[], "[limits] identifier_limit");
    refused_naming("[limits]\nper_ip_rpm = 2000000\n", &[], "[limits] per_ip_rpm");
    refused_naming(file, &[("FREELLM_IDENTIFIER_LIMIT", "1/0")], "FREELLM_IDENTIFIER_LIMIT");
    refused_naming(file, &[("RATE_LIMIT_RPM", "many")], "RATE_LIMIT_RPM");
    refused_naming(file, &[("TRUST_PROXY", "perhaps")], "TRUST_PROXY");
}

#[test]
fn cors_origins_are_set_in_the_file_and_the_environment_wins() {
    let file = "[cors]\nallowed_origins = [\"https://app.example/\", \" https://b.example\"]\n";
    let c = load(file, &[]).unwrap().clients;
    assert_eq!(
        c.allowed_origins.as_deref(),
        Some(&["https://app.example".to_owned(), "https://b.example".to_owned()][..])
    );
    let e = load(file, &[("ALLOWED_ORIGINS", "*")]).unwrap().clients;
    assert_eq!(e.allowed_origins, Some(vec!["*".to_owned()]));
    refused_naming("[cors]\norigins = []\n", &[], "origins");
}

#[test]
fn canary_judging_is_set_in_the_file_the_environment_wins_and_a_bad_value_names_its_key() {
    let file = "[routing]\ncanary_min_calls = 5\ncanary_margin = 0.5\n";
    let r = load(file, &[]).unwrap().routing;
    assert_eq!((r.canary_min_calls, r.canary_margin), (5, 0.5));
    let e = load(file, &[("CANARY_MIN_CALLS", "8")]).unwrap().routing;
    assert_eq!((e.canary_min_calls, e.canary_margin), (8, 0.5));
    refused_naming("[routing]\ncanary_margin = 1.5\n", &[], "[routing] canary_margin");
    refused_naming(file, &[("CANARY_MARGIN", "-1")], "CANARY_MARGIN");
}

#[test]
fn retries_are_set_per_failure_kind_with_transient_retries_as_the_shorthand() {
    let defaults = load(TWO, &[]).unwrap().routing.retries;
    assert_eq!(defaults, Retries { server_error: 1, connection: 1, broken_answer: 1, timeout: 0 }, "today's behaviour");
    let shorthand = load("[routing]\ntransient_retries = 3\n", &[]).unwrap().routing.retries;
    assert_eq!(shorthand, Retries { server_error: 3, connection: 3, broken_answer: 3, timeout: 0 });
    let file = "[routing]\ntransient_retries = 2\n[routing.retries]\nserver_error = 0\ntimeout = 1\n";
    let per_kind = load(file, &[]).unwrap().routing.retries;
    assert_eq!(per_kind, Retries { server_error: 0, connection: 2, broken_answer: 2, timeout: 1 });
    let env_kind = load(file, &[("ROUTE_RETRIES_CONNECTION", "4")]).unwrap().routing.retries;
    assert_eq!((env_kind.server_error, env_kind.connection), (0, 4));
    let env_shorthand = load(file, &[("ROUTE_TRANSIENT_RETRIES", "5")]).unwrap().routing.retries;
    assert_eq!(
        env_shorthand,
        Retries { server_error: 5, connection: 5, broken_answer: 5, timeout: 1 },
        "the environment's shorthand wins over the file's kinds, never over timeouts"
    );
    refused_naming("[routing.retries]\nserver_error = 6\n", &[], "[routing.retries] server_error");
    refused_naming("[routing.retries]\nrate_limited = 1\n", &[], "rate_limited");
    refused_naming("[routing]\ntransient_retries = 9\n", &[], "[routing] transient_retries");
    refused_naming(TWO, &[("ROUTE_RETRIES_TIMEOUT", "x")], "ROUTE_RETRIES_TIMEOUT");
}

#[test]
fn secrets_have_no_file_key() {
    for key in ["api_key", "admin_key", "token_secret"] {
        refused_naming(&format!("[server]\n{key} = \"s\"\n"), &[], key);
        refused_naming(&format!("[limits]\n{key} = \"s\"\n"), &[], key);
    }
}

#[test]
fn a_reload_names_each_changed_live_setting_by_its_key_and_leaves_it_out_of_the_restart_list() {
    let running = load(TWO, &[]).unwrap();
    let edited = load(
        "[routing]\nretry_backoff_ms = 50\n[routing.retries]\ntimeout = 1\n[breaker]\nfailure_threshold = 1\n\
         [limits]\nper_ip_rpm = 5\n[cors]\nallowed_origins = [\"https://a.example\"]\n[cache]\nenabled = false\nttl_ms = 10\n",
        &[],
    )
    .unwrap();
    assert_eq!(
        running.routing.changes(&edited.routing),
        ["[routing.retries] timeout", "[routing] retry_backoff_ms", "[breaker] failure_threshold"]
    );
    assert_eq!(running.clients.changes(&edited.clients), ["[limits] per_ip_rpm", "[cors] allowed_origins"]);
    assert_eq!(running.startup_changes(&edited), ["[cache] ttl_ms"], "only the restart-only key");
    let upstream = load("[upstream]\nconnect_timeout_ms = 10\nstream_max_bytes = 10\n", &[]).unwrap();
    assert_eq!(running.startup_changes(&upstream), ["[upstream] connect_timeout_ms", "[upstream] stream_max_bytes"]);
}

/// The stream ceiling is derived from the adapter instance pool; the text
/// that states it (README, the configuration and security pages, the
/// setting's doc comment) is checked against the constants here.
#[test]
fn the_documented_stream_ceiling_is_the_pools() {
    use freellm_runtime::engine::{MAX_STREAM_HOSTS, STREAMS_PER_HOST};
    let max = freellm_runtime::MAX_OPEN_STREAMS;
    assert_eq!(max, MAX_STREAM_HOSTS * STREAMS_PER_HOST);
    let grouped = |n: u32| {
        let digits = n.to_string();
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        out
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let stated = [
        ("README.md", format!("at most {max})")),
        ("docs/configuration.md", format!("at most {max})")),
        ("docs/configuration.md", format!("({} instances at most)", grouped(MAX_STREAM_HOSTS))),
        ("docs/security.md", format!("at most {} ({} instances", grouped(max), grouped(MAX_STREAM_HOSTS))),
        (
            "host/src/config.rs",
            format!("/// {}, what the adapter instance pool can hold, {STREAMS_PER_HOST} streams", grouped(max)),
        ),
    ];
    for (file, text) in stated {
        let written = std::fs::read_to_string(root.join(file)).expect("read the file");
        assert!(written.contains(&text), "{file} should state the stream ceiling as {text:?}");
    }
    assert_eq!(grouped(111_616), "111,616");
    assert_eq!(grouped(616), "616");
}
