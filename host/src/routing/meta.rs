//! The built-in meta-models (`free`, `free-fast`, `free-smart`), built from
//! what the adapters declare, with no provider known by name.
//!
//! A meta-model picks one model from every enabled provider: `free` each
//! provider's default model, `free-fast` and `free-smart` the model its
//! adapter tags `fast` or `smart` (the default model when it carries the
//! tag, else the first tagged one). A provider whose catalog tags no model
//! `fast` or `smart` at all (a local server cannot know what the operator
//! pulled) serves every meta-model with its default model; one that tags
//! some models but none with the meta-model's tag is left out of it.
//!
//! Providers are tried in the operator's priority order: the providers named
//! in the meta-model's own list (`[routing.order_by_meta]`), else in
//! `[routing] order`, come first in that order, then every other provider in
//! registry order (the order of `plugins.toml`). So an adapter added later,
//! from anywhere, joins the meta-models without a line of host code.
//!
//! [`select`] is pure: it takes the catalogs in registry order and returns
//! the targets, and is tested without an adapter or a registry.

use freellm_runtime::types::{ModelInfo, ModelTags};

/// How a meta-model picks each provider's model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetaPick {
    /// The provider's default model.
    Default,
    /// The model carrying this tag.
    Tagged(ModelTags),
}

/// The built-in meta-models: name and how each picks a provider's model.
pub const META_MODELS: &[(&str, MetaPick)] = &[
    ("free", MetaPick::Default),
    ("free-fast", MetaPick::Tagged(ModelTags::FAST)),
    ("free-smart", MetaPick::Tagged(ModelTags::SMART)),
];

/// Whether `name` is a built-in meta-model.
pub fn is_meta_model(name: &str) -> bool {
    META_MODELS.iter().any(|(n, _)| *n == name)
}

/// The operator's provider priority for the meta-models (`[routing] order`
/// and `[routing.order_by_meta]` in `plugins.toml`; applied live).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetaOrder {
    /// Priority of every meta-model without a list of its own.
    pub order: Vec<String>,
    /// A meta-model's own priority, by meta-model name.
    pub by_meta: Vec<(String, Vec<String>)>,
}

impl MetaOrder {
    /// The priority list of meta-model `name` (empty: registry order).
    pub fn for_meta(&self, name: &str) -> &[String] {
        self.by_meta.iter().find(|(n, _)| n == name).map_or(self.order.as_slice(), |(_, list)| list.as_slice())
    }
}

/// One enabled provider's catalog, as its adapter declared it.
#[derive(Clone, Copy, Debug)]
pub struct Catalog<'a> {
    /// Provider id.
    pub id: &'a str,
    /// The adapter's default model.
    pub default_model: &'a str,
    /// The adapter's models.
    pub models: &'a [ModelInfo],
}

/// What [`select`] found: the targets in priority order, and the providers
/// left out with why.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Selection {
    /// `(provider, model)` in the order to try.
    pub targets: Vec<(String, String)>,
    /// `(provider, reason)` of each provider left out.
    pub left_out: Vec<(String, String)>,
}

/// The tags a meta-model can pick by; a catalog tagging none of them joins
/// every meta-model with its default model.
fn quality_tags() -> ModelTags {
    ModelTags::FAST | ModelTags::SMART
}

/// The targets of a meta-model: one model of each catalog (given in
/// registry order), ordered by `priority` (named providers first, in that
/// order, then the rest in registry order). With `vision`, a model that
/// accepts images is preferred among those that qualify.
pub fn select(catalogs: &[Catalog<'_>], pick: MetaPick, priority: &[String], vision: bool) -> Selection {
    let mut ordered: Vec<&Catalog<'_>> = Vec::with_capacity(catalogs.len());
    for id in priority {
        if let Some(c) = catalogs.iter().find(|c| c.id == id.as_str())
            && !ordered.iter().any(|o| o.id == c.id)
        {
            ordered.push(c);
        }
    }
    for c in catalogs {
        if !ordered.iter().any(|o| o.id == c.id) {
            ordered.push(c);
        }
    }
    let mut out = Selection::default();
    for c in ordered {
        match pick_model(c, pick, vision) {
            Ok(model) => out.targets.push((c.id.to_owned(), model.to_owned())),
            Err(reason) => out.left_out.push((c.id.to_owned(), reason)),
        }
    }
    out
}

/// The model of `catalog` that meta-model `pick` uses, or why there is none.
fn pick_model<'a>(catalog: &Catalog<'a>, pick: MetaPick, vision: bool) -> Result<&'a str, String> {
    let models = catalog.models;
    let default = models.iter().find(|m| m.id == catalog.default_model);
    let tag = match pick {
        MetaPick::Tagged(tag) if models.iter().any(|m| m.tags.intersects(quality_tags())) => tag,
        // Untagged catalogs serve every meta-model with their default.
        _ => ModelTags::empty(),
    };
    let qualifies = |m: &&ModelInfo| m.tags.contains(tag);
    let sees = |m: &&ModelInfo| m.tags.contains(ModelTags::VISION);
    let chosen = if vision {
        default
            .filter(|m| qualifies(m) && sees(m))
            .or_else(|| models.iter().find(|m| qualifies(m) && sees(m)))
            .or_else(|| default.filter(qualifies))
            .or_else(|| models.iter().find(qualifies))
    } else {
        default.filter(qualifies).or_else(|| models.iter().find(qualifies))
    };
    match chosen {
        Some(m) => Ok(m.id.as_str()),
        None if models.is_empty() => Err("has no models".into()),
        None => match pick {
            MetaPick::Tagged(t) => Err(format!("declares no model tagged {}", tag_name(t))),
            MetaPick::Default => Err("has no default model".into()),
        },
    }
}

/// The WIT spelling of a single model tag.
fn tag_name(tag: ModelTags) -> &'static str {
    [
        (ModelTags::FAST, "fast"),
        (ModelTags::SMART, "smart"),
        (ModelTags::REASONING, "reasoning"),
        (ModelTags::VISION, "vision"),
        (ModelTags::TOOLS, "tools"),
    ]
    .into_iter()
    .find(|(t, _)| *t == tag)
    .map_or("?", |(_, name)| name)
}

#[cfg(test)]
mod tests;
