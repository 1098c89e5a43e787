//! Which `Host` headers the gateway answers (`[server] allowed_hosts`,
//! `FREELLM_ALLOWED_HOSTS`): parsed once with the configuration, checked by
//! [`crate::http::guard::check_host`] on every request.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

/// Which `Host` headers the gateway answers (`[server] allowed_hosts`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedHosts {
    /// Any host (bound to a non-loopback address, or `*` configured).
    Any,
    /// These host names (lowercase, no port; IPv6 in brackets), any port.
    List(Arc<[String]>),
}

impl AllowedHosts {
    /// From the configured list (`*` = any) and the bound address. Without
    /// a list: the loopback names and the bound address when bound to
    /// loopback (where DNS rebinding is the threat), any host otherwise (a
    /// public gateway's names are not known here).
    pub fn new(configured: Option<&[String]>, bound: IpAddr) -> Result<Self, String> {
        let Some(list) = configured else {
            if !bound.is_loopback() {
                return Ok(Self::Any);
            }
            let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "[::1]".to_owned()];
            let own = match bound {
                IpAddr::V4(v4) => v4.to_string(),
                IpAddr::V6(v6) => format!("[{v6}]"),
            };
            if !names.contains(&own) {
                names.push(own);
            }
            return Ok(Self::List(names.into()));
        };
        if list.iter().any(|h| h.trim() == "*") {
            return Ok(Self::Any);
        }
        if list.is_empty() {
            return Err("list at least one host name, or \"*\" for any".into());
        }
        let mut names = Vec::with_capacity(list.len());
        for entry in list {
            let name = host_name(entry.trim()).ok_or_else(|| format!("{entry:?} is not a host name"))?;
            names.push(name.into_owned());
        }
        Ok(Self::List(names.into()))
    }

    /// Whether a request naming `host` (the `Host` header: `name[:port]`)
    /// is served. No host at all is refused unless any host is allowed.
    pub fn allows(&self, host: Option<&str>) -> bool {
        match self {
            Self::Any => true,
            Self::List(names) => host.and_then(host_name).is_some_and(|name| names.iter().any(|n| *n == name)),
        }
    }
}

/// The host name of `name[:port]`, lowercase, without a trailing dot; IPv6
/// literals keep their brackets (borrowed unless it had capitals). `None`
/// when it is not a plausible host.
fn host_name(authority: &str) -> Option<Cow<'_, str>> {
    let (name, port) = if authority.starts_with('[') {
        let end = authority.find(']')?;
        (&authority[..=end], &authority[end + 1..])
    } else {
        match authority.rfind(':') {
            Some(i) => (&authority[..i], &authority[i..]),
            None => (authority, ""),
        }
    };
    let port_ok = port.is_empty()
        || port
            .strip_prefix(':')
            .is_some_and(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    let name = name.strip_suffix('.').unwrap_or(name);
    let name_ok = match name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        Some(v6) => !v6.is_empty() && v6.bytes().all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.')),
        None => {
            !name.is_empty()
                && name.len() <= 253
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        }
    };
    if !(port_ok && name_ok) {
        return None;
    }
    Some(if name.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(name.to_ascii_lowercase())
    } else {
        Cow::Borrowed(name)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_gateways_answer_only_loopback_names_by_default() {
        let hosts = AllowedHosts::new(None, [127, 0, 0, 1].into()).unwrap();
        for ok in ["localhost", "localhost:3000", "LOCALHOST:1", "localhost.", "127.0.0.1:3000", "[::1]:3000", "[::1]"]
        {
            assert!(hosts.allows(Some(ok)), "{ok}");
        }
        for bad in [
            None,
            Some(""),
            Some("evil.example"),
            Some("evil.example:3000"),
            Some("localhost.evil.example"),
            Some("127.0.0.1.nip.io"),
            Some("127.0.0.2:3000"),
            Some("localhost:"),
            Some("localhost:x"),
            Some("::1"),
            Some("[::1"),
            Some("user@localhost"),
        ] {
            assert!(!hosts.allows(bad), "{bad:?}");
        }
        let v6 = AllowedHosts::new(None, "::1".parse().unwrap()).unwrap();
        assert!(v6.allows(Some("[::1]:8080")) && !v6.allows(Some("evil.example")));
        let other = AllowedHosts::new(None, [127, 0, 0, 2].into()).unwrap();
        assert!(other.allows(Some("127.0.0.2:3000")));
        assert_eq!(AllowedHosts::new(None, [0, 0, 0, 0].into()).unwrap(), AllowedHosts::Any);
        assert_eq!(AllowedHosts::new(None, [192, 168, 1, 2].into()).unwrap(), AllowedHosts::Any);
    }

    #[test]
    fn configured_hosts_replace_the_defaults() {
        let list = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let hosts = AllowedHosts::new(Some(&list(&["GW.example.", "10.0.0.5:9"])), [127, 0, 0, 1].into()).unwrap();
        assert!(hosts.allows(Some("gw.example:443")) && hosts.allows(Some("10.0.0.5")));
        assert!(!hosts.allows(Some("localhost")));
        assert_eq!(AllowedHosts::new(Some(&list(&["a", "*"])), [127, 0, 0, 1].into()).unwrap(), AllowedHosts::Any);
        assert!(AllowedHosts::new(Some(&[]), [127, 0, 0, 1].into()).is_err());
        assert!(AllowedHosts::new(Some(&list(&["a b"])), [127, 0, 0, 1].into()).is_err());
        assert!(AllowedHosts::new(Some(&list(&["http://x/"])), [127, 0, 0, 1].into()).is_err());
    }
}
