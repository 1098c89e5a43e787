//! The routing strategy: how a route orders its candidates. A setting of
//! `[routing]`, switchable at runtime (`PATCH /v1/status/routing`) as part
//! of the live configuration ([`crate::live::Live`]).

use std::str::FromStr;

/// How a route orders its candidates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// Priority order, skipping ahead past targets with no headroom in their
    /// declared per-key windows (the default).
    QuotaAware,
    /// Rotate the starting target per request.
    RoundRobin,
    /// Uniformly random order.
    Random,
}

impl Strategy {
    /// The name used in configuration and the status API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::QuotaAware => "quota_aware",
            Self::RoundRobin => "round_robin",
            Self::Random => "random",
        }
    }
}

impl FromStr for Strategy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "quota_aware" => Ok(Self::QuotaAware),
            "round_robin" => Ok(Self::RoundRobin),
            "random" => Ok(Self::Random),
            other => Err(format!("unknown strategy {other:?}: use quota_aware, round_robin or random")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategies_parse_from_their_names_and_nothing_else() {
        for s in [Strategy::QuotaAware, Strategy::RoundRobin, Strategy::Random] {
            assert_eq!(s.as_str().parse::<Strategy>().unwrap(), s);
        }
        assert!("fastest".parse::<Strategy>().is_err());
    }
}
