//! Why a request found no answer: the error of the routing layer
//! ([`crate::routing::router`], [`crate::routing::failover`], [`crate::routing::stream`]).
//!
//! It says what failed, where the failure came from ([`ErrorSource`]) and
//! whether trying again may help ([`RoutingError::is_retryable`]); it knows
//! nothing of HTTP. The HTTP edge turns it into the client's envelope once,
//! through `From<RoutingError> for ApiError`.

use serde_json::Value;

use crate::access::admission::LimitRefusal;

/// Where a routing failure came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorSource {
    /// The request itself: an unknown model, a refused mode, nothing that
    /// can serve it.
    Request,
    /// The gateway's own configuration or limits: no provider configured,
    /// every candidate exhausted, the route deadline.
    Gateway,
    /// A provider's adapter component (a trap, a refused mapping).
    Adapter,
    /// A provider's upstream (an error status, a broken or silent answer).
    Upstream,
}

/// A routing failure.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RoutingError {
    /// The model is neither a route nor in an enabled provider's catalog.
    #[error("Model \"{model}\" not found: {reason}")]
    ModelNotFound {
        /// The model as sent.
        model: String,
        /// Why it matched nothing.
        reason: String,
        /// Models that would match.
        available: Vec<String>,
    },
    /// No provider is enabled at all.
    #[error("{hint}")]
    NoProvidersConfigured {
        /// What to set.
        hint: String,
    },
    /// Strict mode forbids meta-models and routes.
    #[error("{}", strict_meta_message(.model))]
    StrictMetaForbidden {
        /// The model as sent.
        model: String,
    },
    /// No enabled provider can serve this request.
    #[error("{message}")]
    ModelNotSupported {
        /// The model as sent.
        model: String,
        /// Which providers were skipped and why.
        message: String,
    },
    /// A provider refused the request or failed to answer it.
    #[error("{message}")]
    Provider {
        /// The provider.
        provider: String,
        /// The provider's (or the gateway's) description.
        message: String,
        /// The upstream's own error code, when it gave one.
        upstream_code: Option<String>,
        /// The adapter's classification said retrying elsewhere may help.
        retryable: bool,
    },
    /// A provider's adapter trapped or asked for something the host refuses.
    #[error("{message}")]
    AdapterFault {
        /// The provider.
        provider: String,
        /// What went wrong.
        message: String,
    },
    /// The gateway had no free adapter instance for the request (every
    /// pool slot in use, or the open-stream budget spent): its own
    /// capacity, not a provider's failure.
    #[error("the gateway is at capacity: its open-stream budget or its adapter instances are all in use")]
    AtCapacity,
    /// Strict mode: the one provider tried rate-limited the request.
    #[error("{message}")]
    RateLimited {
        /// The provider.
        provider: String,
        /// The upstream's message.
        message: String,
        /// When the key is usable again.
        retry_after_ms: Option<u64>,
    },
    /// The client's own limits refused the request; decided while it was
    /// routed ([`crate::access::admission::LimitGate`]), so it stopped before
    /// reaching an upstream.
    #[error(transparent)]
    Limited(LimitRefusal),
    /// Every candidate was rate-limited, out of quota or failed, or the
    /// route deadline passed.
    #[error("{message}")]
    Exhausted {
        /// The model as sent.
        model: String,
        /// What happened.
        message: String,
        /// When to retry, and what each provider and attempt came to.
        advice: Box<Advice>,
    },
}

/// The advice an `all_providers_exhausted` error carries (boxed: it is the
/// largest error and results carry errors by value).
#[derive(Debug, Clone, Default)]
pub struct Advice {
    /// When some provider is usable again.
    pub retry_after_ms: Option<u64>,
    /// Each provider's availability.
    pub providers: Vec<Value>,
    /// Other meta-models and when they are available.
    pub suggestions: Vec<Value>,
    /// What each attempt (and each target passed over) came to: provider,
    /// model, outcome, upstream status, message.
    pub attempts: Vec<Value>,
}

/// The message of [`RoutingError::StrictMetaForbidden`] (and of its
/// envelope).
pub fn strict_meta_message(model: &str) -> String {
    format!(
        "Strict mode forbids meta-model \"{model}\". Specify a concrete \"<provider>/<model>\" id \
         (GET /v1/models lists them) or disable strict mode."
    )
}

impl RoutingError {
    /// A provider failure from its upstream's answer.
    pub fn provider(provider: &str, message: impl Into<String>, upstream_code: Option<String>) -> Self {
        Self::Provider { provider: provider.to_owned(), message: message.into(), upstream_code, retryable: true }
    }

    /// A provider failure the adapter says another try would not fix (an
    /// invalid request, a content filter, a prompt too long).
    pub fn provider_final(provider: &str, message: impl Into<String>, upstream_code: Option<String>) -> Self {
        Self::Provider { provider: provider.to_owned(), message: message.into(), upstream_code, retryable: false }
    }

    /// The failure an adapter call's fault is: the gateway's capacity when
    /// no instance was free, else the adapter's fault.
    pub fn from_fault(provider: &str, fault: &freellm_runtime::AdapterFault) -> Self {
        if fault.kind == freellm_runtime::FaultKind::Busy {
            Self::AtCapacity
        } else {
            Self::AdapterFault { provider: provider.to_owned(), message: fault.to_string() }
        }
    }

    /// Where the failure came from.
    pub fn source(&self) -> ErrorSource {
        match self {
            Self::ModelNotFound { .. }
            | Self::StrictMetaForbidden { .. }
            | Self::ModelNotSupported { .. }
            | Self::Limited(_) => ErrorSource::Request,
            Self::NoProvidersConfigured { .. } | Self::Exhausted { .. } | Self::AtCapacity => ErrorSource::Gateway,
            Self::AdapterFault { .. } => ErrorSource::Adapter,
            Self::Provider { .. } | Self::RateLimited { .. } => ErrorSource::Upstream,
        }
    }

    /// Whether the same request may succeed later or elsewhere: rate limits
    /// and exhaustion pass, provider failures may; a request the router or
    /// the provider refused as such will be refused again.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::ModelNotFound { .. }
            | Self::StrictMetaForbidden { .. }
            | Self::ModelNotSupported { .. }
            | Self::NoProvidersConfigured { .. } => false,
            Self::Provider { retryable, .. } => *retryable,
            Self::AdapterFault { .. }
            | Self::RateLimited { .. }
            | Self::Exhausted { .. }
            | Self::AtCapacity
            | Self::Limited(_) => true,
        }
    }

    /// The provider the failure is about, if one.
    pub fn provider_id(&self) -> Option<&str> {
        match self {
            Self::Provider { provider, .. }
            | Self::AdapterFault { provider, .. }
            | Self::RateLimited { provider, .. } => Some(provider),
            _ => None,
        }
    }

    /// The message as a client or the request log may see it: secrets
    /// redacted.
    pub fn message(&self) -> String {
        crate::redact::redact(&self.to_string()).into_owned()
    }

    /// The line the request log keeps: the message, prefixed with the
    /// provider a provider failure is about.
    pub fn log_text(&self) -> String {
        match self {
            Self::Provider { provider, .. } | Self::AdapterFault { provider, .. } => {
                format!("{provider}: {}", self.message())
            }
            // The operator's log keeps what the last failed attempt said.
            Self::Exhausted { advice, .. } => {
                let last = advice.attempts.iter().rev().find_map(|a| {
                    let message = a.get("message")?.as_str()?;
                    Some(format!("{}: {message}", a.get("provider")?.as_str()?))
                });
                match last {
                    Some(last) => crate::redact::redact(&format!("{} (last: {last})", self.message())).into_owned(),
                    None => self.message(),
                }
            }
            _ => self.message(),
        }
    }

    /// The request log's status: `all_providers_failed` for exhaustion.
    pub fn log_status(&self) -> crate::ops::stats::RequestStatus {
        use crate::ops::stats::RequestStatus;
        if matches!(self, Self::Exhausted { .. }) { RequestStatus::AllProvidersFailed } else { RequestStatus::Error }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_routing_error_names_its_source_and_whether_a_retry_may_help() {
        let final_ = RoutingError::provider_final("groq", "bad request", None);
        assert_eq!((final_.source(), final_.is_retryable()), (ErrorSource::Upstream, false));
        let flaky = RoutingError::provider("groq", "503", None);
        assert!(flaky.is_retryable());
        let fault = RoutingError::AdapterFault { provider: "groq".into(), message: "trap".into() };
        assert_eq!(fault.source(), ErrorSource::Adapter);
        let strict = RoutingError::StrictMetaForbidden { model: "free".into() };
        assert_eq!((strict.source(), strict.is_retryable()), (ErrorSource::Request, false));
        let none = RoutingError::NoProvidersConfigured { hint: "set a key".into() };
        assert_eq!((none.source(), none.is_retryable()), (ErrorSource::Gateway, false));
    }

    #[test]
    fn the_log_text_names_the_provider_and_redacts_secrets() {
        crate::redact::set_secrets("routing-error-test", ["sk-routing-error-secret-123"]);
        let e = RoutingError::provider("groq", "key sk-routing-error-secret-123 refused", None);
        let text = e.log_text();
        assert!(text.starts_with("groq: "), "{text}");
        assert!(!text.contains("sk-routing-error-secret-123"), "{text}");
        let exhausted = RoutingError::Exhausted {
            model: "free".into(),
            message: "All providers exhausted for model: free".into(),
            advice: Box::default(),
        };
        assert_eq!(exhausted.log_text(), "All providers exhausted for model: free");
        let after_failures = RoutingError::Exhausted {
            model: "free".into(),
            message: "All providers exhausted for model: free".into(),
            advice: Box::new(Advice {
                attempts: vec![
                    serde_json::json!({"provider": "groq", "outcome": "server_error", "message": "down"}),
                    serde_json::json!({"provider": "lab", "outcome": "circuit_open"}),
                ],
                ..Advice::default()
            }),
        };
        assert_eq!(after_failures.log_text(), "All providers exhausted for model: free (last: groq: down)");
        assert_eq!(exhausted.log_status(), crate::ops::stats::RequestStatus::AllProvidersFailed);
    }

    #[test]
    fn the_envelope_keeps_the_strict_mode_message() {
        let e = RoutingError::StrictMetaForbidden { model: "free".into() };
        assert_eq!(e.to_string(), strict_meta_message("free"));
    }
}
