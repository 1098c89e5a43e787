//! Provider keys from a file, so a provider added to a running gateway can
//! get its keys without a restart.
//!
//! The file is named in `plugins.toml` (`[keys] file = "keys.toml"`) or by
//! `FREELLM_PROVIDER_KEYS_FILE` (which wins), and watched like
//! `plugins.toml`. It maps names to keys: a key variable (`GROQ_API_KEY`,
//! whatever variable the provider's adapter or `key_env` names) or a
//! provider id (`groq`), each to a list of keys or one comma-separated
//! string, as the environment takes them:
//!
//! ```toml
//! GROQ_API_KEY = ["gsk_first", "gsk_second"]
//! cohere = "co_first,co_second"
//! ```
//!
//! A file whose name ends in `.json` is read as JSON (`{"GROQ_API_KEY":
//! ["gsk_first"]}`), any other as TOML. The environment still wins: a key
//! variable set in the process environment is used whatever the file says
//! ([`crate::config::Config::provider_keys`]).
//!
//! A file that cannot be read or does not parse changes nothing: the keys
//! of its last good read stay, and the error (which never quotes the file's
//! text) is logged. A file that does not exist yet holds no keys. Every key
//! of the file joins the redaction set when it is read.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;

/// The largest keys file read; a bigger one is refused (memory stays bounded).
pub const MAX_KEYS_FILE_BYTES: u64 = 1 << 20;

/// Why a keys file was not taken.
#[derive(Debug, thiserror::Error)]
pub enum KeysFileError {
    /// The file exists but could not be read.
    #[error("cannot read the keys file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_KEYS_FILE_BYTES`].
    #[error("the keys file {path} is larger than {MAX_KEYS_FILE_BYTES} bytes")]
    TooLarge {
        /// The file.
        path: String,
    },
    /// The file is not valid TOML or JSON of the expected shape. The
    /// message gives a position and the entry's name, never a value.
    #[error("the keys file {path} does not parse: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong, and where.
        message: String,
    },
}

/// The keys of one read of the file, by name.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct KeysFile {
    entries: BTreeMap<String, Vec<String>>,
}

impl fmt::Debug for KeysFile {
    /// Names and counts only: the keys never reach a log through `{:?}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.entries.iter().map(|(name, keys)| (name, keys.len()))).finish()
    }
}

/// Whether a keys file is JSON (by its name) rather than TOML.
pub fn is_json(path: &Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json"))
}

impl KeysFile {
    /// Parses a keys file's text (`json`: JSON, else TOML). The error names
    /// a position or an entry, never a value of the file.
    pub fn parse(text: &str, json: bool) -> Result<Self, String> {
        // Both formats become one JSON value, so one mapping reads them.
        let value: serde_json::Value = if json {
            serde_json::from_str(text)
                .map_err(|e| format!("invalid JSON at line {} column {}", e.line(), e.column()))?
        } else {
            let table: toml::Table = toml::from_str(text).map_err(|e| {
                // `Display` would quote the offending line, keys included.
                let line = e.span().map(|span| text[..span.start.min(text.len())].lines().count().max(1));
                match line {
                    Some(line) => format!("invalid TOML at line {line}: {}", e.message()),
                    None => format!("invalid TOML: {}", e.message()),
                }
            })?;
            // A TOML table is always representable as JSON (dates become
            // strings, which the mapping below refuses as keys lists anyway).
            serde_json::to_value(table).map_err(|_| "the keys file holds values JSON cannot represent".to_owned())?
        };
        let serde_json::Value::Object(map) = value else {
            return Err("expected an object of names to keys".to_owned());
        };
        let entries = map.into_iter().map(|(name, value)| {
            let keys = match value {
                serde_json::Value::String(s) => Ok(split(&s)),
                serde_json::Value::Array(items) => items
                    .into_iter()
                    .map(|i| match i {
                        serde_json::Value::String(s) => Ok(s),
                        _ => Err(()),
                    })
                    .collect::<Result<Vec<_>, ()>>()
                    .map(tidy),
                _ => Err(()),
            };
            (name, keys)
        });
        let mut out = BTreeMap::new();
        for (name, keys) in entries {
            let keys = keys.map_err(|()| format!("entry {name:?}: expected a string or a list of strings"))?;
            if name.trim().is_empty() {
                return Err("an entry has an empty name".to_owned());
            }
            out.insert(name, keys);
        }
        Ok(Self { entries: out })
    }

    /// Reads and parses `path`; a file that does not exist holds no keys.
    pub fn load(path: &Path) -> Result<Self, KeysFileError> {
        use std::io::Read;
        let shown = path.display().to_string();
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(source) => return Err(KeysFileError::Read { path: shown, source }),
        };
        let mut text = String::new();
        file.take(MAX_KEYS_FILE_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(|source| KeysFileError::Read { path: shown.clone(), source })?;
        if text.len() as u64 > MAX_KEYS_FILE_BYTES {
            return Err(KeysFileError::TooLarge { path: shown });
        }
        Self::parse(&text, is_json(path)).map_err(|message| KeysFileError::Parse { path: shown, message })
    }

    /// The keys listed under `name` (a key variable or a provider id); `None`
    /// when the file has no such entry or it lists no key.
    pub fn get(&self, name: &str) -> Option<&[String]> {
        self.entries.get(name).map(Vec::as_slice).filter(|keys| !keys.is_empty())
    }

    /// Every key in the file.
    pub fn secrets(&self) -> impl Iterator<Item = &String> {
        self.entries.values().flatten()
    }

    /// The names of the entries (key variables, provider ids).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }
}

/// `k1, k2,,` → `["k1", "k2"]`, as the environment's key variables are read.
fn split(text: &str) -> Vec<String> {
    tidy(text.split(',').map(str::to_owned).collect())
}

fn tidy(keys: Vec<String>) -> Vec<String> {
    keys.into_iter().map(|k| k.trim().to_owned()).filter(|k| !k.is_empty()).collect()
}

/// The keys file a gateway reads, and what its last good read held.
pub struct ProviderKeysFile {
    path: Option<PathBuf>,
    current: ArcSwap<KeysFile>,
}

impl fmt::Debug for ProviderKeysFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderKeysFile").field("path", &self.path).finish_non_exhaustive()
    }
}

impl ProviderKeysFile {
    /// The file at `path` (none: no keys file), holding no keys until
    /// [`reload`](Self::reload) reads it.
    pub fn new(path: Option<PathBuf>) -> Self {
        Self { path, current: ArcSwap::from_pointee(KeysFile::default()) }
    }

    /// The file, when one is configured.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// What the last good read held.
    pub fn current(&self) -> Arc<KeysFile> {
        self.current.load_full()
    }

    /// Re-reads the file. On success its keys replace the previous ones and
    /// join the redaction set; on failure nothing changes.
    pub fn reload(&self) -> Result<Arc<KeysFile>, KeysFileError> {
        let Some(path) = &self.path else { return Ok(self.current()) };
        let fresh = Arc::new(KeysFile::load(path)?);
        crate::redact::set_secrets("keys-file", fresh.secrets());
        self.current.store(fresh.clone());
        Ok(fresh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_and_json_map_names_to_lists_or_comma_strings() {
        let toml = "GROQ_API_KEY = [\" gsk_a \", \"gsk_b\", \"\"]\ncohere = \"co_a,, co_b\"\nempty = []\n";
        let file = KeysFile::parse(toml, false).unwrap();
        assert_eq!(file.get("GROQ_API_KEY").unwrap(), ["gsk_a", "gsk_b"]);
        assert_eq!(file.get("cohere").unwrap(), ["co_a", "co_b"]);
        assert_eq!(file.get("empty"), None);
        assert_eq!(file.get("missing"), None);
        let json = r#"{"GROQ_API_KEY": ["gsk_a", "gsk_b"], "cohere": "co_a, co_b", "empty": []}"#;
        assert_eq!(KeysFile::parse(json, true).unwrap(), file);
        assert_eq!(file.secrets().count(), 4);
        assert_eq!(file.names().collect::<Vec<_>>(), ["GROQ_API_KEY", "cohere", "empty"]);
    }

    #[test]
    fn parse_errors_name_a_position_or_entry_never_a_value() {
        let secret = "gsk_do_not_show_me_anywhere";
        let err = KeysFile::parse(&format!("A = [\"ok\"]\nGROQ_API_KEY = \"{secret}\n"), false).unwrap_err();
        assert!(err.contains("line 2") && !err.contains(secret), "{err}");
        let err = KeysFile::parse(&format!("{{\"GROQ_API_KEY\": \"{secret}\""), true).unwrap_err();
        assert!(err.contains("line 1") && !err.contains(secret), "{err}");
        let err = KeysFile::parse(&format!("GROQ_API_KEY = [\"{secret}\", 7]\n"), false).unwrap_err();
        assert!(err.contains("\"GROQ_API_KEY\"") && !err.contains(secret), "{err}");
        assert!(KeysFile::parse("[\"k\"]", true).is_err(), "not an object");
    }

    #[test]
    fn debug_output_shows_names_and_counts_only() {
        let file = KeysFile::parse("GROQ_API_KEY = [\"gsk_secret_value_1\"]", false).unwrap();
        assert_eq!(format!("{file:?}"), "{\"GROQ_API_KEY\": 1}");
    }

    #[test]
    fn a_bad_read_keeps_the_last_good_keys_and_a_missing_file_holds_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.toml");
        let keys = ProviderKeysFile::new(Some(path.clone()));
        assert_eq!(keys.reload().unwrap().get("A"), None, "no file yet");
        std::fs::write(&path, "A = \"key_one_long\"\n").unwrap();
        assert_eq!(keys.reload().unwrap().get("A").unwrap(), ["key_one_long"]);
        std::fs::write(&path, "A = \"key_two_long\n").unwrap();
        assert!(matches!(keys.reload(), Err(KeysFileError::Parse { .. })));
        assert_eq!(keys.current().get("A").unwrap(), ["key_one_long"]);
        std::fs::write(&path, vec![b'#'; MAX_KEYS_FILE_BYTES as usize + 1]).unwrap();
        assert!(matches!(keys.reload(), Err(KeysFileError::TooLarge { .. })));
        assert!(ProviderKeysFile::new(None).reload().unwrap().get("A").is_none());
    }
}
