//! Where a request may go: model resolution and the ordered candidate list.
//!
//! A model is either a meta-model (`free`, `free-fast`, `free-smart`), which
//! fans out over the enabled providers in the meta-model's priority order
//! using each provider's default model, or a concrete `<provider>/<model>`
//! id (the model part may itself contain slashes), which must be in that
//! provider's catalog. The failover loop in [`crate::api::chat`] walks the
//! plan.

use crate::error::ApiError;
use crate::plugins::{ProviderEntry, Registry};

/// A meta-model and its provider priority.
pub struct MetaModel {
    /// Model name clients send.
    pub name: &'static str,
    /// Providers in priority order; `None` means registry order.
    pub order: Option<&'static [&'static str]>,
}

/// The built-in meta-models.
pub const META_MODELS: &[MetaModel] = &[
    MetaModel { name: "free", order: None },
    MetaModel { name: "free-fast", order: Some(&["groq", "cerebras", "gemini", "nim", "mistral", "ollama"]) },
    MetaModel { name: "free-smart", order: Some(&["gemini", "nim", "groq", "mistral", "cerebras", "ollama"]) },
];

/// One place a request may be sent.
pub struct Candidate<'r> {
    /// The provider slot.
    pub provider: &'r ProviderEntry,
    /// Upstream model id, without the provider prefix.
    pub upstream_model: String,
}

/// The ordered candidates for one request.
pub struct Plan<'r> {
    /// True for a meta-model.
    pub is_meta: bool,
    /// Candidates in the order to try.
    pub candidates: Vec<Candidate<'r>>,
}

/// Resolves `model` against the registry snapshot.
pub fn plan<'r>(registry: &'r Registry, model: &str) -> Result<Plan<'r>, ApiError> {
    if registry.enabled().next().is_none() {
        return Err(no_providers(registry));
    }
    if let Some(meta) = META_MODELS.iter().find(|m| m.name == model) {
        return Ok(Plan { is_meta: true, candidates: meta_candidates(registry, meta) });
    }
    let not_found = |reason: String| ApiError::ModelNotFound {
        model: model.to_owned(),
        reason,
        available: available_models(registry),
    };
    let Some((provider_id, upstream_model)) = model.split_once('/') else {
        return Err(not_found(
            "use a meta-model (free, free-fast, free-smart) or a <provider>/<model> id".into(),
        ));
    };
    let Some(entry) = registry.get(provider_id) else {
        return Err(not_found(format!("there is no provider \"{provider_id}\"")));
    };
    let Some(adapter) = entry.live() else {
        let why = entry.note.as_deref().unwrap_or("disabled");
        return Err(not_found(format!("provider \"{provider_id}\" is not enabled ({why})")));
    };
    if !adapter.info.models.iter().any(|m| m.id == upstream_model) {
        return Err(not_found(format!("provider \"{provider_id}\" has no model \"{upstream_model}\"")));
    }
    Ok(Plan {
        is_meta: false,
        candidates: vec![Candidate { provider: entry, upstream_model: upstream_model.to_owned() }],
    })
}

fn meta_candidates<'r>(registry: &'r Registry, meta: &MetaModel) -> Vec<Candidate<'r>> {
    let ordered: Vec<&ProviderEntry> = match meta.order {
        None => registry.enabled().collect(),
        Some(order) => order.iter().filter_map(|id| registry.get(id)).filter(|p| p.live().is_some()).collect(),
    };
    ordered
        .into_iter()
        .filter_map(|provider| {
            let info = &provider.live()?.info;
            (!info.default_model.is_empty())
                .then(|| Candidate { provider, upstream_model: info.default_model.clone() })
        })
        .collect()
}

/// Every model id a client may use right now: meta-models, then each enabled
/// provider's catalog in registry order.
pub fn available_models(registry: &Registry) -> Vec<String> {
    META_MODELS
        .iter()
        .map(|m| m.name.to_owned())
        .chain(registry.enabled().flat_map(|p| {
            let info = p.live().map(|a| &a.info);
            info.into_iter().flat_map(|i| i.models.iter()).map(move |m| format!("{}/{}", p.id, m.id))
        }))
        .collect()
}

fn no_providers(registry: &Registry) -> ApiError {
    let mut hints: Vec<String> = registry.providers.iter().filter_map(|p| p.note.clone()).collect();
    if hints.is_empty() {
        hints.push("add a [providers.<id>] table to plugins.toml".into());
    }
    ApiError::NoProvidersConfigured {
        hint: format!(
            "No provider is configured. Set at least one of GROQ_API_KEY, GEMINI_API_KEY, MISTRAL_API_KEY, \
             CEREBRAS_API_KEY, NVIDIA_NIM_API_KEY, or OLLAMA_BASE_URL with OLLAMA_MODELS. Providers: {}.",
            hints.join("; ")
        ),
    }
}
