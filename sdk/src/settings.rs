//! Typed access to an adapter's settings (the `[providers.<id>.settings]`
//! table of `plugins.toml`, which arrives as strings), with errors that name
//! the setting, so `configure` can tell the operator exactly what to fix.
//!
//! ```
//! use freellm_sdk::settings::SettingsReader;
//!
//! let settings = vec![("rpm".to_owned(), "20".to_owned()), ("models".to_owned(), "a, b".to_owned())];
//! let reader = SettingsReader::new(&settings);
//! reader.only(&["rpm", "models", "base_url"]).unwrap();
//! assert_eq!(reader.u32("rpm").unwrap(), Some(20));
//! assert_eq!(reader.list("models"), ["a", "b"]);
//! assert_eq!(reader.url("base_url").unwrap(), None);
//! ```
//!
//! A blank value counts as absent everywhere (an unset environment
//! override arrives blank). The host always passes `id`; [`SettingsReader::only`]
//! accepts it without being told.

use std::cell::RefCell;
use std::rc::Rc;

use crate::Settings;

thread_local! {
    /// The settings this instance was configured with.
    static INSTANCE: RefCell<Rc<Settings>> = RefCell::new(Rc::new(Vec::new()));
}

/// The settings this instance was configured with. Contract 0.3 configures
/// every instance before its first call (the host calls `configure` on it
/// with the slot's settings), and the SDK keeps them here, so a call reads
/// them without their crossing into the component again. Empty before
/// `configure`.
pub fn instance() -> Rc<Settings> {
    INSTANCE.with(|cell| cell.borrow().clone())
}

/// The value of `key` in [`instance`] (the last one wins if a key repeats).
pub fn instance_setting(key: &str) -> Option<String> {
    INSTANCE.with(|cell| crate::setting(&cell.borrow(), key).map(str::to_owned))
}

/// Keeps `settings` as this instance's. The glue calls it before
/// [`Adapter::configure`](crate::Adapter::configure); an adapter's native
/// tests may call it to stand in for the host.
pub fn set_instance(settings: Settings) {
    INSTANCE.with(|cell| *cell.borrow_mut() = Rc::new(settings));
}

/// A setting the adapter cannot use. Its message names the setting and, for
/// an unknown one, the closest known name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingError {
    /// A required setting is absent or blank.
    #[error("setting `{key}` is required")]
    Missing {
        /// The setting.
        key: String,
    },
    /// A setting's value does not parse.
    #[error("setting `{key}`: {why}")]
    Invalid {
        /// The setting.
        key: String,
        /// What is wrong, with the value.
        why: String,
    },
    /// A setting the adapter does not know (likely a typo).
    #[error("unknown setting `{key}`{}; valid settings: {}", suggestion.as_ref().map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default(), known.join(", "))]
    Unknown {
        /// The setting given.
        key: String,
        /// The known setting closest to it, when one is close.
        suggestion: Option<String>,
        /// Every known setting.
        known: Vec<String>,
    },
}

impl SettingError {
    /// An invalid-value error for `key`.
    pub fn invalid(key: &str, why: impl Into<String>) -> Self {
        Self::Invalid { key: key.to_owned(), why: why.into() }
    }
}

impl From<SettingError> for String {
    /// The message, as `configure` returns it.
    fn from(error: SettingError) -> Self {
        error.to_string()
    }
}

/// Reads typed values out of [`Settings`].
#[derive(Debug, Clone, Copy)]
pub struct SettingsReader<'a> {
    settings: &'a Settings,
}

impl<'a> SettingsReader<'a> {
    /// A reader over `settings`.
    pub fn new(settings: &'a Settings) -> Self {
        Self { settings }
    }

    /// Fails on the first setting that is neither `id` nor in `known`,
    /// suggesting the closest known name.
    pub fn only(&self, known: &[&str]) -> Result<(), SettingError> {
        for (key, _) in self.settings {
            if key == "id" || known.contains(&key.as_str()) {
                continue;
            }
            let suggestion = known
                .iter()
                .map(|k| (edit_distance(k, key), *k))
                .filter(|(d, _)| *d <= 2)
                .min()
                .map(|(_, k)| k.to_owned());
            return Err(SettingError::Unknown {
                key: key.clone(),
                suggestion,
                known: known.iter().map(|k| (*k).to_owned()).collect(),
            });
        }
        Ok(())
    }

    /// The trimmed value of `key` (the last one if it repeats); `None` when
    /// absent or blank.
    pub fn string(&self, key: &str) -> Option<&'a str> {
        crate::setting(self.settings, key).map(str::trim).filter(|v| !v.is_empty())
    }

    /// The value of `key`, which must be given.
    pub fn required(&self, key: &str) -> Result<&'a str, SettingError> {
        self.string(key).ok_or_else(|| SettingError::Missing { key: key.to_owned() })
    }

    /// A whole number from 0 to `u32::MAX`.
    pub fn u32(&self, key: &str) -> Result<Option<u32>, SettingError> {
        let Some(value) = self.string(key) else {
            return Ok(None);
        };
        match value.parse::<u32>() {
            Ok(n) if value.bytes().all(|b| b.is_ascii_digit()) => Ok(Some(n)),
            _ => Err(SettingError::invalid(key, format!("\"{value}\" is not a whole number from 0 to {}", u32::MAX))),
        }
    }

    /// `true` or `false` (any case).
    pub fn bool(&self, key: &str) -> Result<Option<bool>, SettingError> {
        match self.string(key) {
            None => Ok(None),
            Some(value) if value.eq_ignore_ascii_case("true") => Ok(Some(true)),
            Some(value) if value.eq_ignore_ascii_case("false") => Ok(Some(false)),
            Some(value) => Err(SettingError::invalid(key, format!("\"{value}\" is not true or false"))),
        }
    }

    /// An http(s) URL with a host and no whitespace, query or fragment; a
    /// trailing `/` is removed (request paths start with one).
    pub fn url(&self, key: &str) -> Result<Option<String>, SettingError> {
        let Some(url) = self.string(key) else {
            return Ok(None);
        };
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))
            .ok_or_else(|| SettingError::invalid(key, format!("\"{url}\" must start with http:// or https://")))?;
        if rest.split('/').next().is_none_or(str::is_empty) {
            return Err(SettingError::invalid(key, format!("\"{url}\" has no host")));
        }
        if url.chars().any(|c| c.is_whitespace() || c.is_control() || c == '?' || c == '#') {
            return Err(SettingError::invalid(
                key,
                format!("\"{url}\" must not contain spaces, a query or a fragment"),
            ));
        }
        Ok(Some(url.trim_end_matches('/').to_owned()))
    }

    /// A comma-separated list (the host joins a TOML array with `,`), each
    /// entry trimmed, blank entries dropped; empty when absent.
    pub fn list(&self, key: &str) -> Vec<String> {
        self.string(key)
            .map(|v| v.split(',').map(str::trim).filter(|e| !e.is_empty()).map(str::to_owned).collect())
            .unwrap_or_default()
    }

    /// One of `choices` (compared case-insensitively, returned as listed).
    pub fn one_of(&self, key: &str, choices: &[&'static str]) -> Result<Option<&'static str>, SettingError> {
        let Some(value) = self.string(key) else {
            return Ok(None);
        };
        choices
            .iter()
            .find(|c| c.eq_ignore_ascii_case(value))
            .map(|c| Some(*c))
            .ok_or_else(|| SettingError::invalid(key, format!("\"{value}\" is not one of {}", choices.join(", "))))
    }
}

/// Levenshtein distance, for "did you mean" hints.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (diagonal + usize::from(ca != *cb)).min(above + 1).min(row[j] + 1);
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Settings {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn strings_are_trimmed_and_blank_means_absent() {
        let s = settings(&[("a", "  x "), ("b", "   "), ("a", "y")]);
        let r = SettingsReader::new(&s);
        assert_eq!((r.string("a"), r.string("b"), r.string("c")), (Some("y"), None, None));
        assert_eq!(r.required("a"), Ok("y"));
        assert_eq!(r.required("b").unwrap_err().to_string(), "setting `b` is required");
    }

    #[test]
    fn numbers_and_booleans_name_the_setting_when_wrong() {
        let s = settings(&[
            ("rpm", "20"),
            ("rpd", "-1"),
            ("tpm", "1e3"),
            ("big", "4294967296"),
            ("on", "TRUE"),
            ("off", "no"),
        ]);
        let r = SettingsReader::new(&s);
        assert_eq!(r.u32("rpm"), Ok(Some(20)));
        assert_eq!(r.u32("missing"), Ok(None));
        for key in ["rpd", "tpm", "big"] {
            assert!(r.u32(key).unwrap_err().to_string().starts_with(&format!("setting `{key}`: ")), "{key}");
        }
        assert_eq!(r.bool("on"), Ok(Some(true)));
        assert_eq!(r.bool("off").unwrap_err().to_string(), "setting `off`: \"no\" is not true or false");
    }

    #[test]
    fn urls_must_be_http_with_a_host() {
        let s = settings(&[
            ("ok", "https://api.example.com/v2/"),
            ("scheme", "ftp://x"),
            ("host", "https:///x"),
            ("query", "https://x?a=1"),
        ]);
        let r = SettingsReader::new(&s);
        assert_eq!(r.url("ok"), Ok(Some("https://api.example.com/v2".to_owned())));
        assert!(r.url("scheme").unwrap_err().to_string().contains("must start with http"));
        assert!(r.url("host").unwrap_err().to_string().contains("has no host"));
        assert!(r.url("query").unwrap_err().to_string().contains("query"));
    }

    #[test]
    fn lists_and_choices() {
        let s = settings(&[("models", " a ,, b,"), ("mode", "Fast")]);
        let r = SettingsReader::new(&s);
        assert_eq!(r.list("models"), ["a", "b"]);
        assert!(r.list("none").is_empty());
        assert_eq!(r.one_of("mode", &["fast", "slow"]), Ok(Some("fast")));
        assert_eq!(
            r.one_of("mode", &["a", "b"]).unwrap_err().to_string(),
            "setting `mode`: \"Fast\" is not one of a, b"
        );
    }

    #[test]
    fn unknown_settings_are_refused_with_a_suggestion() {
        let s = settings(&[("id", "x"), ("base_ur", "https://x")]);
        let err = SettingsReader::new(&s).only(&["base_url", "models"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown setting `base_ur` (did you mean `base_url`?); valid settings: base_url, models"
        );
        let s = settings(&[("zzzzzz", "1")]);
        let err: String = SettingsReader::new(&s).only(&["base_url"]).unwrap_err().into();
        assert_eq!(err, "unknown setting `zzzzzz`; valid settings: base_url");
        assert_eq!(SettingsReader::new(&settings(&[("id", "x")])).only(&[]), Ok(()));
    }
}
