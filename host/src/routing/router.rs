//! Where a request may go: model resolution, candidate filtering and
//! ordering.
//!
//! A model is a route name (the built-in meta-models `free`, `free-fast`,
//! `free-smart`, built from what the adapters declare in
//! [`crate::routing::meta`], or a `[routes.<name>]` from `plugins.toml`,
//! which may also redefine the built-ins) or a concrete `<provider>/<model>`
//! id (the model part may contain slashes). A route name may be a glob
//! (`team-*`, `*` = any characters but `/`); an exact name wins over every
//! glob, and among globs the one with the longest literal prefix (then the
//! first in the file) wins. A target's model may be `{model}` (the
//! requested name) or `{1}`, `{2}`, … (what the glob's first, second, … `*`
//! matched). Names with a `/` are concrete ids and never match a glob. A
//! route expands to its targets; each target is
//! checked against what the request needs (tools, JSON schema, images,
//! context window, privacy posture) and skipped, not failed, when its
//! provider cannot serve it. The survivors are ordered by the strategy:
//! `quota_aware` (priority order, but targets without headroom in their
//! declared per-key limits go last), `round_robin` or `random`. The
//! failover loop in [`crate::routing::failover`] walks the plan.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::config::RouteConfig;
use crate::providers::{ProviderEntry, Registry};
use crate::routing::decide::Retries;
use crate::routing::error::RoutingError;
use crate::routing::meta::{self, META_MODELS, MetaOrder, MetaPick};
use crate::routing::needs::Needs;
use crate::routing::pattern::{fill_placeholders, glob_match, is_glob};
pub use crate::routing::strategy::Strategy;
use freellm_runtime::types::{Capabilities, ModelInfo, ModelTags, PrivacyPolicy};

/// One target of a route: a provider, and a model or its default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// Every provider in registry order, each with its default model.
    AllProviders,
    /// One provider; `model: None` means its default model.
    Provider {
        /// Provider id.
        id: String,
        /// Upstream model id.
        model: Option<String>,
    },
}

impl Target {
    /// The target with its model's placeholders filled in for one request.
    /// Whether the target's model holds a placeholder to fill.
    fn has_placeholder(&self) -> bool {
        matches!(self, Self::Provider { model: Some(m), .. } if m.contains('{'))
    }

    fn fill(&self, requested: &str, captures: &[&str]) -> Self {
        match self {
            Self::Provider { id, model: Some(m) } if m.contains('{') => {
                Self::Provider { id: id.clone(), model: Some(fill_placeholders(m, requested, captures)) }
            }
            other => other.clone(),
        }
    }

    fn parse(text: &str) -> Self {
        let text = text.trim();
        if text == "*" {
            return Self::AllProviders;
        }
        match text.split_once('/') {
            Some((id, model)) => Self::Provider { id: id.to_owned(), model: Some(model.to_owned()) },
            None => Self::Provider { id: text.to_owned(), model: None },
        }
    }
}

/// A named route: a model name and its ordered targets.
#[derive(Debug)]
pub struct Route {
    /// The model name clients send.
    pub name: String,
    /// Targets in priority order.
    pub targets: Vec<Target>,
    /// This route's strategy, or the global one.
    pub strategy: Option<Strategy>,
    /// Retries of the fast failures per target (server error, connection,
    /// broken answer); the global numbers when absent.
    pub retries: Option<u32>,
    /// Targets tried when the prompt is too long for a target's context.
    pub context_fallbacks: Vec<Target>,
    /// True for `free`, `free-fast` and `free-smart`.
    pub builtin: bool,
    /// A built-in meta-model's pick and provider priority: its targets are
    /// chosen from the registry at each request ([`meta::select`]).
    pub meta: Option<(MetaPick, Vec<String>)>,
    counter: AtomicUsize,
}

/// Every route a client may name.
#[derive(Debug)]
pub struct RouteTable {
    routes: Vec<Route>,
    configured: Vec<RouteConfig>,
    meta_order: MetaOrder,
}

impl RouteTable {
    /// The built-in meta-models, then the configured routes (a configured
    /// route named like a built-in replaces it, keeping its place).
    pub fn new(configured: &[RouteConfig]) -> Self {
        let mut routes: Vec<Route> = META_MODELS
            .iter()
            .map(|(name, pick)| Route {
                name: (*name).to_owned(),
                targets: Vec::new(),
                strategy: None,
                retries: None,
                context_fallbacks: Vec::new(),
                builtin: true,
                meta: Some((*pick, Vec::new())),
                counter: AtomicUsize::new(0),
            })
            .collect();
        for rc in configured {
            let route = Route {
                name: rc.name.clone(),
                targets: rc.targets.iter().map(|t| Target::parse(t)).collect(),
                strategy: rc.strategy,
                retries: rc.retries,
                context_fallbacks: rc.context_fallbacks.iter().map(|t| Target::parse(t)).collect(),
                builtin: false,
                meta: None,
                counter: AtomicUsize::new(0),
            };
            match routes.iter_mut().find(|r| r.name == rc.name) {
                Some(slot) => *slot = route,
                None => routes.push(route),
            }
        }
        Self { routes, configured: configured.to_vec(), meta_order: MetaOrder::default() }
    }

    /// The same table with the operator's provider priority for the
    /// meta-models (`[routing] order`, `[routing.order_by_meta]`).
    pub fn with_meta_order(mut self, order: &MetaOrder) -> Self {
        for route in &mut self.routes {
            if let Some((_, priority)) = &mut route.meta {
                *priority = order.for_meta(&route.name).to_vec();
            }
        }
        self.meta_order = order.clone();
        self
    }

    /// The meta-model priority this table was built with (to tell whether a
    /// reload changes anything).
    pub fn meta_order(&self) -> &MetaOrder {
        &self.meta_order
    }

    /// The `[routes.*]` this table was built from (to tell whether a reload
    /// changes anything).
    pub fn configured(&self) -> &[RouteConfig] {
        &self.configured
    }

    /// The route called exactly `name` (no glob matching).
    pub fn get(&self, name: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.name == name)
    }

    /// The route a requested model goes to, with its targets' placeholders
    /// filled: the exact name first; else, among the globs that match, the
    /// one with the longest literal prefix, then the first in file order.
    pub fn resolve(&self, model: &str) -> Option<Resolved<'_>> {
        if let Some(route) = self.routes.iter().find(|r| !is_glob(&r.name) && r.name == model) {
            return Some(Resolved::of(route, model, &[]));
        }
        let mut best: Option<(&Route, Vec<&str>)> = None;
        for route in self.routes.iter().filter(|r| is_glob(&r.name)) {
            let Some(captures) = glob_match(&route.name, model) else { continue };
            let prefix = |r: &Route| r.name.find('*').unwrap_or(r.name.len());
            if best.as_ref().is_none_or(|(b, _)| prefix(route) > prefix(b)) {
                best = Some((route, captures));
            }
        }
        best.map(|(route, captures)| Resolved::of(route, model, &captures))
    }

    /// Every exact route name, in order (glob patterns are not model ids a
    /// client sends as they are).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.routes.iter().map(|r| r.name.as_str()).filter(|n| !is_glob(n))
    }

    /// The routes, in order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }
}

/// A route chosen for one requested model, its targets instantiated.
#[derive(Debug)]
pub struct Resolved<'t> {
    /// The route.
    pub route: &'t Route,
    /// Its targets with `{model}` and `{N}` filled in (the route's own,
    /// borrowed, when none has a placeholder: no copy per request).
    pub targets: Cow<'t, [Target]>,
    /// Its context fallbacks, filled in the same way.
    pub context_fallbacks: Cow<'t, [Target]>,
}

impl<'t> Resolved<'t> {
    fn of(route: &'t Route, requested: &str, captures: &[&str]) -> Self {
        let fill = |targets: &'t [Target]| -> Cow<'t, [Target]> {
            if targets.iter().any(Target::has_placeholder) {
                Cow::Owned(targets.iter().map(|t| t.fill(requested, captures)).collect())
            } else {
                Cow::Borrowed(targets)
            }
        };
        Self { route, targets: fill(&route.targets), context_fallbacks: fill(&route.context_fallbacks) }
    }
}

/// One place a request may be sent.
#[derive(Clone)]
pub struct Candidate {
    /// The provider slot.
    pub provider: Arc<ProviderEntry>,
    /// Upstream model id, without the provider prefix.
    pub upstream_model: String,
    /// Same-target retries allowed on this target, per failure kind.
    pub retries: Retries,
}

impl std::fmt::Debug for Candidate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.provider.id, self.upstream_model)
    }
}

/// What was requested.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlanKind {
    /// A built-in meta-model.
    Meta,
    /// A configured route.
    Route,
    /// A concrete `<provider>/<model>`.
    Concrete,
}

/// A target that was left out, and why (reported in errors and logs).
#[derive(Clone, Debug)]
pub struct Skipped {
    /// Provider id.
    pub provider: String,
    /// Why it cannot serve this request.
    pub reason: String,
}

/// The ordered candidates for one request.
pub struct Plan {
    /// What kind of model was requested.
    pub kind: PlanKind,
    /// Candidates in the order to try.
    pub candidates: Vec<Candidate>,
    /// Tried only after a context-length failure.
    pub context_fallbacks: Vec<Candidate>,
    /// Targets left out.
    pub skipped: Vec<Skipped>,
    /// The strategy that ordered the candidates.
    pub strategy: Strategy,
    /// The route's first target by priority (before the strategy reordered
    /// them): the one whose short `Retry-After` is worth waiting out.
    pub primary: Option<Arc<ProviderEntry>>,
}

/// Inputs of [`plan`].
pub struct PlanRequest<'a> {
    /// The requested model.
    pub model: &'a str,
    /// What the request needs.
    pub needs: Needs,
    /// Global strategy now.
    pub strategy: Strategy,
    /// Global same-target retries per failure kind (`[routing.retries]`).
    pub retries: Retries,
    /// `X-FreeLLM-Strict`.
    pub strict: bool,
}

/// Resolves a model against the registry snapshot and the route table.
pub fn plan(registry: &Registry, table: &RouteTable, req: &PlanRequest<'_>) -> Result<Plan, RoutingError> {
    if registry.enabled().next().is_none() {
        return Err(no_providers(registry));
    }
    let model = req.model;
    if let Some(resolved) = table.resolve(model) {
        if req.strict {
            return Err(RoutingError::StrictMetaForbidden { model: model.to_owned() });
        }
        return Ok(route_plan(registry, &resolved, req));
    }
    concrete_plan(registry, table, req)
}

fn concrete_plan(registry: &Registry, table: &RouteTable, req: &PlanRequest<'_>) -> Result<Plan, RoutingError> {
    let model = req.model;
    let not_found = |reason: String| RoutingError::ModelNotFound {
        model: model.to_owned(),
        reason,
        available: available_models(registry, table),
    };
    let Some((provider_id, upstream_model)) = model.split_once('/') else {
        return Err(not_found(
            "use a route or meta-model (free, free-fast, free-smart) or a <provider>/<model> id".into(),
        ));
    };
    let Some(entry) = registry.get(provider_id) else {
        return Err(not_found(format!("there is no provider \"{provider_id}\"")));
    };
    let Some(adapter) = entry.live() else {
        let why = entry.note.as_deref().unwrap_or("disabled");
        return Err(not_found(format!("provider \"{provider_id}\" is not enabled ({why})")));
    };
    let Some(info) = adapter.info.models.iter().find(|m| m.id == upstream_model) else {
        return Err(not_found(format!("provider \"{provider_id}\" has no model \"{upstream_model}\"")));
    };
    if let Err(reason) = serves(entry, info, &req.needs) {
        return Err(RoutingError::ModelNotSupported { model: model.to_owned(), message: reason });
    }
    Ok(Plan {
        kind: PlanKind::Concrete,
        primary: Some(entry.clone()),
        candidates: vec![Candidate {
            provider: entry.clone(),
            upstream_model: upstream_model.to_owned(),
            retries: if req.strict { Retries::NONE } else { req.retries },
        }],
        context_fallbacks: Vec::new(),
        skipped: Vec::new(),
        strategy: req.strategy,
    })
}

fn route_plan(registry: &Registry, resolved: &Resolved<'_>, req: &PlanRequest<'_>) -> Plan {
    let route = resolved.route;
    let retries = route.retries.map_or(req.retries, |n| req.retries.with_transient(n));
    let mut skipped = Vec::new();
    let meta_targets =
        route.meta.as_ref().map(|(pick, priority)| meta_targets(registry, *pick, priority, &req.needs, &mut skipped));
    let targets = meta_targets.as_deref().unwrap_or(&resolved.targets);
    let mut candidates = expand(registry, targets, &req.needs, retries, &mut skipped);
    let context_fallbacks = {
        let needs = Needs { estimated_tokens: 0, ..req.needs };
        let mut ignored = Vec::new();
        expand(registry, &resolved.context_fallbacks, &needs, retries, &mut ignored)
    };
    let strategy = route.strategy.unwrap_or(req.strategy);
    let primary = candidates.first().map(|c| c.provider.clone());
    order(&mut candidates, strategy, &route.counter, req.needs.estimated_tokens);
    Plan {
        kind: if route.builtin { PlanKind::Meta } else { PlanKind::Route },
        candidates,
        context_fallbacks,
        skipped,
        strategy,
        primary,
    }
}

/// A meta-model's targets now: one model of each enabled provider, as its
/// adapter declares them, in the operator's priority order.
/// A route's targets as they stand now: a meta-model's picked from what
/// the registry's adapters declare, any other route's as configured.
pub fn current_targets(registry: &Registry, route: &Route) -> Vec<Target> {
    match &route.meta {
        Some((pick, priority)) => meta_targets(registry, *pick, priority, &Needs::default(), &mut Vec::new()),
        None => route.targets.clone(),
    }
}

fn meta_targets(
    registry: &Registry,
    pick: MetaPick,
    priority: &[String],
    needs: &Needs,
    skipped: &mut Vec<Skipped>,
) -> Vec<Target> {
    let catalogs: Vec<meta::Catalog<'_>> = registry
        .enabled()
        .filter_map(|p| p.live().map(|a| (p, a)))
        .map(|(p, a)| meta::Catalog { id: &p.id, default_model: &a.info.default_model, models: &a.info.models })
        .collect();
    let selection = meta::select(&catalogs, pick, priority, needs.vision);
    skipped.extend(selection.left_out.into_iter().map(|(provider, reason)| Skipped { provider, reason }));
    selection.targets.into_iter().map(|(id, model)| Target::Provider { id, model: Some(model) }).collect()
}

/// Expands targets into candidates, skipping what cannot serve `needs`.
/// A provider appears at most once per list.
fn expand(
    registry: &Registry,
    targets: &[Target],
    needs: &Needs,
    retries: Retries,
    skipped: &mut Vec<Skipped>,
) -> Vec<Candidate> {
    let mut out: Vec<Candidate> = Vec::new();
    let mut add = |entry: &Arc<ProviderEntry>, model: Option<&str>, out: &mut Vec<Candidate>| {
        if out.iter().any(|c| Arc::ptr_eq(&c.provider, entry) && model.is_none_or(|m| m == c.upstream_model)) {
            return;
        }
        let Some(adapter) = entry.live() else { return };
        let info = &adapter.info;
        let chosen = match model {
            Some(m) => info.models.iter().find(|x| x.id == m),
            // With images, the provider's first vision model stands in for
            // a default that cannot see.
            None if needs.vision => info
                .models
                .iter()
                .find(|x| x.id == info.default_model && x.tags.contains(ModelTags::VISION))
                .or_else(|| info.models.iter().find(|x| x.tags.contains(ModelTags::VISION))),
            None => info.models.iter().find(|x| x.id == info.default_model).or(info.models.first()),
        };
        let Some(chosen) = chosen else {
            let reason = match model {
                Some(m) => format!("has no model \"{m}\""),
                None if needs.vision => "has no vision model".to_owned(),
                None => "has no models".to_owned(),
            };
            skipped.push(Skipped { provider: entry.id.to_string(), reason });
            return;
        };
        match serves(entry, chosen, needs) {
            Ok(()) => out.push(Candidate { provider: entry.clone(), upstream_model: chosen.id.clone(), retries }),
            Err(reason) => skipped.push(Skipped { provider: entry.id.to_string(), reason }),
        }
    };
    for target in targets {
        match target {
            Target::AllProviders => {
                for entry in registry.providers.iter() {
                    add(entry, None, &mut out);
                }
            }
            Target::Provider { id, model } => {
                if let Some(entry) = registry.get(id) {
                    add(entry, model.as_deref(), &mut out);
                }
            }
        }
    }
    out
}

/// Whether `entry` can serve a request with `needs` on `model`; the reason
/// when it cannot.
fn serves(entry: &ProviderEntry, model: &ModelInfo, needs: &Needs) -> Result<(), String> {
    let Some(adapter) = entry.live() else { return Err("is not enabled".into()) };
    let info = &adapter.info;
    let caps = info.capabilities;
    if needs.no_training && !matches!(info.privacy.policy, PrivacyPolicy::NoTraining | PrivacyPolicy::Local) {
        return Err(format!("privacy policy is {} (no-training requested)", privacy_name(info.privacy.policy)));
    }
    if needs.tools && !caps.contains(Capabilities::TOOLS) {
        return Err("does not support tools".into());
    }
    if needs.json_schema && !caps.contains(Capabilities::JSON_SCHEMA) {
        return Err("does not support json_schema".into());
    }
    if needs.json_mode && !caps.contains(Capabilities::JSON_MODE) {
        return Err("does not support JSON mode".into());
    }
    if needs.vision && !(caps.contains(Capabilities::VISION) && model.tags.contains(ModelTags::VISION)) {
        return Err(format!("model \"{}\" does not support vision/image inputs", model.id));
    }
    if model.context_window > 0 && needs.estimated_tokens > model.context_window {
        return Err(format!(
            "the prompt (~{} tokens) exceeds the context window of \"{}\" ({} tokens)",
            needs.estimated_tokens, model.id, model.context_window
        ));
    }
    Ok(())
}

/// The WIT spelling of a privacy policy.
pub fn privacy_name(policy: PrivacyPolicy) -> &'static str {
    match policy {
        PrivacyPolicy::NoTraining => "no-training",
        PrivacyPolicy::Configurable => "configurable",
        PrivacyPolicy::FreeTierTrains => "free-tier-trains",
        PrivacyPolicy::Local => "local",
    }
}

/// Orders candidates by strategy.
fn order(candidates: &mut [Candidate], strategy: Strategy, counter: &AtomicUsize, tokens: u32) {
    let n = candidates.len();
    if n < 2 {
        return;
    }
    match strategy {
        Strategy::RoundRobin => {
            let start = counter.fetch_add(1, Ordering::Relaxed) % n;
            candidates.rotate_left(start);
        }
        Strategy::Random => fastrand::shuffle(candidates),
        Strategy::QuotaAware => {
            let now = crate::clock::now();
            // Stable: priority order among those with headroom, then the
            // rest by how soon they free up.
            let mut keyed: Vec<(Option<std::time::Duration>, usize)> = candidates
                .iter()
                .enumerate()
                .map(|(i, c)| (c.provider.wait_for_headroom(&c.upstream_model, now, tokens), i))
                .collect();
            keyed.sort_by_key(|(wait, i)| (wait.is_some(), wait.unwrap_or_default(), *i));
            let reordered: Vec<Candidate> = keyed.iter().map(|(_, i)| candidates[*i].clone()).collect();
            candidates.clone_from_slice(&reordered);
        }
    }
}

/// Every model id a client may use right now: routes, then each enabled
/// provider's catalog in registry order.
pub fn available_models(registry: &Registry, table: &RouteTable) -> Vec<String> {
    table
        .names()
        .map(str::to_owned)
        .chain(registry.enabled().flat_map(|p| {
            let info = p.live().map(|a| &a.info);
            info.into_iter().flat_map(|i| i.models.iter()).map(move |m| format!("{}/{}", p.id, m.id))
        }))
        .collect()
}

fn no_providers(registry: &Registry) -> RoutingError {
    RoutingError::NoProvidersConfigured { hint: no_providers_hint(registry) }
}

/// What to set to enable a provider, for each provider the registry holds
/// (its own key variable, or why it is off), or how to add one.
pub fn no_providers_hint(registry: &Registry) -> String {
    let hints: Vec<String> = registry
        .providers
        .iter()
        .map(|p| format!("{}: {}", p.id, p.note.as_deref().unwrap_or("not enabled")))
        .collect();
    if hints.is_empty() {
        return "No provider is configured: add a [providers.<id>] table to plugins.toml.".into();
    }
    format!("No provider is enabled. {}.", hints.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        assert_eq!(Target::parse("*"), Target::AllProviders);
        assert_eq!(Target::parse("groq"), Target::Provider { id: "groq".into(), model: None });
        assert_eq!(
            Target::parse("nim/meta/llama-3.3-70b-instruct"),
            Target::Provider { id: "nim".into(), model: Some("meta/llama-3.3-70b-instruct".into()) }
        );
    }

    #[test]
    fn configured_routes_add_to_and_replace_builtins() {
        let table = RouteTable::new(&[
            RouteConfig {
                name: "free-fast".into(),
                targets: vec!["ollama".into()],
                strategy: Some(Strategy::Random),
                retries: None,
                context_fallbacks: vec![],
            },
            RouteConfig {
                name: "my-chat".into(),
                targets: vec!["groq/llama-3.3-70b-versatile".into()],
                strategy: None,
                retries: Some(0),
                context_fallbacks: vec!["gemini/gemini-2.5-pro".into()],
            },
        ]);
        assert_eq!(table.names().collect::<Vec<_>>(), ["free", "free-fast", "free-smart", "my-chat"]);
        let fast = table.get("free-fast").unwrap();
        assert!(!fast.builtin);
        assert_eq!(fast.targets, [Target::Provider { id: "ollama".into(), model: None }]);
        assert!(table.get("free").unwrap().builtin);
    }

    fn route(name: &str, targets: &[&str]) -> RouteConfig {
        RouteConfig {
            name: name.into(),
            targets: targets.iter().map(|t| (*t).to_owned()).collect(),
            strategy: None,
            retries: None,
            context_fallbacks: vec!["lab/{model}-long".into()],
        }
    }

    fn resolved(table: &RouteTable, model: &str) -> Option<(String, Vec<Target>, Vec<Target>)> {
        table.resolve(model).map(|r| (r.route.name.clone(), r.targets.into_owned(), r.context_fallbacks.into_owned()))
    }

    fn lab(model: &str) -> Target {
        Target::Provider { id: "lab".into(), model: Some(model.into()) }
    }

    #[test]
    fn an_exact_route_wins_over_globs_and_the_longest_literal_prefix_wins_among_globs() {
        let table = RouteTable::new(&[
            route("*", &["lab/{model}"]),
            route("team-*", &["lab/{model}", "groq/llama-3.3-70b-versatile"]),
            route("team-a*", &["lab/{1}"]),
            route("team-*-x", &["lab/second"]),
            route("team-alpha", &["lab/exact"]),
        ]);
        let (name, targets, fallbacks) = resolved(&table, "team-beta").unwrap();
        assert_eq!(name, "team-*");
        assert_eq!(
            targets,
            [lab("team-beta"), Target::Provider { id: "groq".into(), model: Some("llama-3.3-70b-versatile".into()) }]
        );
        assert_eq!(fallbacks, [lab("team-beta-long")]);
        assert_eq!(resolved(&table, "team-alpha").unwrap().1, [lab("exact")], "an exact name wins");
        let (name, targets, _) = resolved(&table, "team-ax").unwrap();
        assert_eq!((name.as_str(), targets), ("team-a*", vec![lab("x")]), "the longer literal prefix wins");
        assert_eq!(resolved(&table, "team-b-x").unwrap().0, "team-*", "same prefix: the first in the file");
        assert_eq!(resolved(&table, "other").unwrap().0, "*");
        assert_eq!(resolved(&table, "free").unwrap().0, "free", "a built-in is an exact name");
        assert!(table.resolve("groq/llama-3.3-70b-versatile").is_none(), "a concrete id is never a glob's");
        assert!(!table.names().any(|n| n.contains('*')), "patterns are not listed as models");
    }
}
