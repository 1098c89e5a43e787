//! `freellm plugin new`: writes a new adapter crate that builds for
//! `wasm32-wasip2` and passes `freellm plugin check` as written, so an author
//! starts from something that works and changes it piece by piece.
//!
//! Two templates: an adapter for an API of its own shape (the default:
//! request mapping, answer and named-event stream normalization with the
//! SDK's helpers), and with `--openai-compatible` an adapter on the SDK's
//! OpenAI defaults. Each comes with golden fixtures (`fixtures/`), some of
//! them embedded in the component, and unit tests that run the fixtures and
//! the conformance cases natively.
//!
//! Where the SDK comes from: a crate written inside a checkout of this
//! repository (any folder below the one holding `sdk/`) depends on the
//! checkout's SDK by path, and gets a copy of its `Cargo.lock` so it builds
//! with the gateway's own dependency versions; elsewhere it depends on
//! `freellm-sdk` by version, unless `sdk_path` names a checkout's `sdk/`.
//! The crate has its own `[workspace]` table (and the `wasm` build profile),
//! so it builds on its own wherever it lies, except directly in the
//! repository's `providers/` folder, whose crates are workspace members.

use std::fmt::Write as _;
use std::path::{Component, Path, PathBuf};

/// What to write.
#[derive(Debug, Clone)]
pub struct ScaffoldOptions {
    /// The adapter's name: its provider id (`[providers.<name>]`, the
    /// `<name>/` model prefix) and the crate's folder.
    pub name: String,
    /// The folder the crate's folder is created in.
    pub parent: PathBuf,
    /// The OpenAI-compatible template instead of the one for an API of its
    /// own shape.
    pub openai_compatible: bool,
    /// The SDK's folder (`sdk/` of a checkout); found by looking upwards
    /// from `parent` when not given.
    pub sdk_path: Option<PathBuf>,
}

/// Why nothing (or not everything) was written.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    /// The name cannot be a provider id.
    #[error("invalid adapter name {0:?}: use 1-40 characters a-z, 0-9, '-' and '_', starting with a letter")]
    InvalidName(String),
    /// The crate's folder is already there.
    #[error("{0} already exists; choose another name or folder")]
    Exists(PathBuf),
    /// `sdk_path` is not the SDK's folder.
    #[error("{0} is not the freellm-sdk crate's folder (no Cargo.toml naming freellm-sdk)")]
    NotTheSdk(PathBuf),
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// What was written.
#[derive(Debug, Clone)]
pub struct Scaffolded {
    /// The crate's folder.
    pub dir: PathBuf,
    /// The crate's package name (`freellm-adapter-<name>`).
    pub package: String,
    /// The component file `cargo build --profile wasm --target
    /// wasm32-wasip2` makes, relative to the target directory.
    pub component: String,
    /// How the SDK dependency was written.
    pub sdk: SdkSource,
    /// Every file written, relative to `dir`.
    pub files: Vec<PathBuf>,
}

/// Where the generated crate takes the SDK from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SdkSource {
    /// A path dependency on a checkout's `sdk/` (relative to the crate).
    Path(String),
    /// A registry dependency.
    Version(String),
}

/// The package name of the SDK, as its manifest names it.
const SDK_PACKAGE: &str = "freellm-sdk";

const OTHER_LIB: &str = include_str!("scaffold/templates/other_lib.rs.tmpl");
const OPENAI_LIB: &str = include_str!("scaffold/templates/openai_lib.rs.tmpl");

/// Fixture files of each template: (file name, text).
const OTHER_FIXTURES: &[(&str, &str)] = &[
    ("map-system-and-turns.json", include_str!("scaffold/templates/other_map.json.tmpl")),
    ("map-image-unsupported.json", include_str!("scaffold/templates/other_map_image.json.tmpl")),
    ("respond-text.json", include_str!("scaffold/templates/other_respond.json.tmpl")),
    ("classify-429-retry-after.json", include_str!("scaffold/templates/other_classify.json.tmpl")),
    ("stream-text.json", include_str!("scaffold/templates/other_stream.json.tmpl")),
    ("stream-error-event.json", include_str!("scaffold/templates/other_stream_error.json.tmpl")),
];
const OPENAI_FIXTURES: &[(&str, &str)] = &[
    ("map-drops-logit-bias.json", include_str!("scaffold/templates/openai_map.json.tmpl")),
    ("respond-text.json", include_str!("scaffold/templates/openai_respond.json.tmpl")),
    ("classify-429-retry-after.json", include_str!("scaffold/templates/openai_classify.json.tmpl")),
    ("stream-text.json", include_str!("scaffold/templates/openai_stream.json.tmpl")),
];

/// Whether `name` can be a provider id and a crate folder.
pub fn valid_name(name: &str) -> bool {
    name.len() <= 40
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// The Rust type name for adapter `name`: `acme-ai` → `AcmeAi`.
pub fn type_name(name: &str) -> String {
    name.split(['-', '_'])
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map(|first| first.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
        })
        .collect()
}

/// The key variable for adapter `name`: `acme-ai` → `ACME_AI_API_KEY`.
pub fn key_env(name: &str) -> String {
    format!("{}_API_KEY", name.to_ascii_uppercase().replace('-', "_"))
}

/// Every file of the crate for `name`, as (path relative to the crate,
/// text); pure, so tests can read the output without a file system.
pub fn render(name: &str, openai_compatible: bool, sdk: &SdkSource, own_workspace: bool) -> Vec<(PathBuf, String)> {
    let fill = |template: &str| {
        template
            .replace("__TYPE__", &type_name(name))
            .replace("__DISPLAY__", &type_name(name))
            .replace("__KEY_ENV__", &key_env(name))
            .replace("__ID__", name)
    };
    let (lib, fixtures) = if openai_compatible { (OPENAI_LIB, OPENAI_FIXTURES) } else { (OTHER_LIB, OTHER_FIXTURES) };
    let mut files = vec![
        (PathBuf::from("Cargo.toml"), manifest(name, sdk, own_workspace)),
        (PathBuf::from("src/lib.rs"), fill(lib)),
        (PathBuf::from("README.md"), readme(name, openai_compatible)),
    ];
    files.extend(fixtures.iter().map(|(file, text)| (Path::new("fixtures").join(file), fill(text))));
    if own_workspace {
        // In the repository, its own `.cargo/config.toml` says the same.
        files.push((PathBuf::from(".cargo/config.toml"), CARGO_CONFIG.to_owned()));
    }
    files
}

/// Cargo's settings for a crate of its own: components built with
/// WebAssembly SIMD, which the SDK reads request strings with.
const CARGO_CONFIG: &str = r#"# The SDK reads a request's strings 64 bytes a step with WebAssembly
# SIMD; the gateway's engine supports it.
[target.wasm32-wasip2]
rustflags = ["-C", "target-feature=+simd128"]
"#;

fn manifest(name: &str, sdk: &SdkSource, own_workspace: bool) -> String {
    let sdk_dep = match sdk {
        SdkSource::Path(path) => format!("{{ path = {path:?} }}"),
        SdkSource::Version(version) => format!("{{ version = {version:?} }}"),
    };
    let sdk_dev_dep = match sdk {
        SdkSource::Path(path) => format!("{{ path = {path:?}, features = [\"fixtures\"] }}"),
        SdkSource::Version(version) => format!("{{ version = {version:?}, features = [\"fixtures\"] }}"),
    };
    let mut text = format!(
        r#"[package]
name = "freellm-adapter-{name}"
description = "The {display} adapter for the FreeLLM gateway (a WebAssembly component)"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
# cdylib: the component; rlib: the unit tests, which run natively.
crate-type = ["cdylib", "rlib"]

[dependencies]
freellm-sdk = {sdk_dep}
serde_json = {{ version = "1", features = ["preserve_order"] }}

[dev-dependencies]
# The native fixture runner, for tests only: the component never carries it.
freellm-sdk = {sdk_dev_dep}
"#,
        display = type_name(name),
    );
    if own_workspace {
        text.push_str(
            r#"
# A workspace of its own: the crate builds wherever it lies.
[workspace]

# `cargo build --profile wasm --target wasm32-wasip2`: small, fast components.
[profile.wasm]
inherits = "release"
opt-level = 3
lto = true
codegen-units = 1
panic = "abort"
strip = "debuginfo"
debug = false
"#,
        );
    }
    text
}

fn readme(name: &str, openai_compatible: bool) -> String {
    let krate = format!("freellm-adapter-{name}");
    let wasm = format!("{}.wasm", krate.replace('-', "_"));
    let mut text = String::new();
    let _ = writeln!(text, "# The {} adapter for FreeLLM\n", type_name(name));
    let _ = writeln!(
        text,
        "Written by `freellm plugin new{}`; see the gateway's `docs/writing-an-adapter.md`.\n",
        if openai_compatible { " --openai-compatible" } else { "" }
    );
    let _ = writeln!(text, "```sh");
    let _ = writeln!(text, "cargo test                                   # fixtures and conformance, natively");
    let _ = writeln!(text, "cargo build --profile wasm --target wasm32-wasip2");
    let _ = writeln!(text, "freellm plugin check target/wasm32-wasip2/wasm/{wasm} --fixtures fixtures");
    let _ = writeln!(text, "```\n");
    let _ = writeln!(text, "Then in the gateway's `plugins.toml`:\n");
    let _ = writeln!(
        text,
        "```toml\n[providers.{name}]\ncomponent = \"<this folder>/target/wasm32-wasip2/wasm/{wasm}\"\n```\n"
    );
    let _ = writeln!(text, "and the key in `{}` (or the gateway's keys file).", key_env(name));
    text
}

/// Writes the crate `options` describe; refuses to touch an existing
/// folder.
pub fn write(options: &ScaffoldOptions) -> Result<Scaffolded, ScaffoldError> {
    let name = options.name.as_str();
    if !valid_name(name) {
        return Err(ScaffoldError::InvalidName(name.to_owned()));
    }
    let dir = options.parent.join(name);
    if dir.exists() {
        return Err(ScaffoldError::Exists(dir));
    }
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ScaffoldError::Write { path, source }
    };
    std::fs::create_dir_all(&options.parent).map_err(write_err(&options.parent))?;
    let parent = options.parent.canonicalize().map_err(write_err(&options.parent))?;
    let sdk_dir = match &options.sdk_path {
        Some(path) => {
            let path = path.canonicalize().map_err(|_| ScaffoldError::NotTheSdk(path.clone()))?;
            if !is_sdk_dir(&path) {
                return Err(ScaffoldError::NotTheSdk(path));
            }
            Some(path)
        }
        None => find_checkout_sdk(&parent),
    };
    let sdk = match &sdk_dir {
        Some(sdk) => SdkSource::Path(relative_path(&parent.join(name), sdk)),
        None => SdkSource::Version(env!("CARGO_PKG_VERSION").to_owned()),
    };
    // The repository's `providers/*` are members of its workspace; anywhere
    // else a crate needs a workspace of its own.
    let member = sdk_dir
        .as_deref()
        .and_then(Path::parent)
        .is_some_and(|root| parent == root.join("providers") && root.join("Cargo.toml").is_file());
    let files = render(name, options.openai_compatible, &sdk, !member);
    for (relative, text) in &files {
        let path = dir.join(relative);
        if let Some(folder) = path.parent() {
            std::fs::create_dir_all(folder).map_err(write_err(folder))?;
        }
        std::fs::write(&path, text).map_err(write_err(&path))?;
    }
    let mut written: Vec<PathBuf> = files.into_iter().map(|(path, _)| path).collect();
    // The checkout's lock file: the same dependency versions as the gateway,
    // found offline. Cargo drops what the crate does not use.
    if let Some(lock) = sdk_dir.as_deref().and_then(Path::parent).map(|root| root.join("Cargo.lock"))
        && !member
        && lock.is_file()
    {
        let target = dir.join("Cargo.lock");
        std::fs::copy(&lock, &target).map_err(write_err(&target))?;
        written.push(PathBuf::from("Cargo.lock"));
    }
    let package = format!("freellm-adapter-{name}");
    Ok(Scaffolded {
        component: format!("wasm32-wasip2/wasm/{}.wasm", package.replace('-', "_")),
        dir,
        package,
        sdk,
        files: written,
    })
}

/// Whether `dir` holds the SDK crate.
fn is_sdk_dir(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("Cargo.toml")).is_ok_and(|text| {
        text.lines().any(|line| {
            line.split_once('=')
                .is_some_and(|(key, value)| key.trim() == "name" && value.trim().trim_matches('"') == SDK_PACKAGE)
        })
    })
}

/// The `sdk/` folder of the checkout `dir` lies in, if any.
fn find_checkout_sdk(dir: &Path) -> Option<PathBuf> {
    dir.ancestors().map(|a| a.join("sdk")).find(|sdk| is_sdk_dir(sdk))
}

/// `to` relative to `from` (both absolute), with `/` separators, as Cargo
/// paths are written.
fn relative_path(from: &Path, to: &Path) -> String {
    let from: Vec<Component> = from.components().collect();
    let to: Vec<Component> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let ups = std::iter::repeat_n("..".to_owned(), from.len() - common);
    let downs = to[common..].iter().map(|c| c.as_os_str().to_string_lossy().into_owned());
    let parts: Vec<String> = ups.chain(downs).collect();
    if parts.is_empty() { ".".to_owned() } else { parts.join("/") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_ids_types_and_key_variables() {
        assert!(valid_name("acme") && valid_name("acme-ai_2"));
        for bad in ["", "Acme", "2acme", "acme/ai", "a b", &"a".repeat(41)] {
            assert!(!valid_name(bad), "{bad:?}");
        }
        assert_eq!(type_name("acme-ai_2"), "AcmeAi2");
        assert_eq!(key_env("acme-ai"), "ACME_AI_API_KEY");
    }

    #[test]
    fn paths_are_relative_from_the_crate_to_the_sdk() {
        assert_eq!(relative_path(Path::new("/r/target/x/acme"), Path::new("/r/sdk")), "../../../sdk");
        assert_eq!(relative_path(Path::new("/r/providers/acme"), Path::new("/r/sdk")), "../../sdk");
    }

    #[test]
    fn every_placeholder_is_filled_in_both_templates() {
        for openai in [false, true] {
            let files = render("acme-ai", openai, &SdkSource::Version("0.1.0".into()), true);
            for (path, text) in &files {
                assert!(!text.contains("__"), "{} keeps a placeholder", path.display());
            }
            let lib = &files.iter().find(|(p, _)| p.ends_with("lib.rs")).unwrap().1;
            assert!(lib.contains("pub struct AcmeAi;") && lib.contains("\"ACME_AI_API_KEY\""));
            assert!(lib.contains("AdapterInfo::builder(\"acme-ai\""));
            assert_eq!(lib.contains("NamedEventStream"), !openai);
            // Every embedded fixture is a file of the template.
            for embedded in lib.lines().filter_map(|l| l.trim().strip_prefix("\"fixtures/")) {
                let file = embedded.trim_end_matches(['"', ',']);
                assert!(files.iter().any(|(p, _)| p.ends_with(file)), "{file} embedded but not written");
            }
            for (path, text) in files.iter().filter(|(p, _)| p.starts_with("fixtures")) {
                let parsed = freellm_fixtures::Fixture::parse(text);
                assert!(parsed.is_ok(), "{} is not a fixture: {:?}", path.display(), parsed.err());
            }
        }
    }

    #[test]
    fn the_manifest_names_the_sdk_by_path_or_version_and_a_workspace_when_alone() {
        let text = manifest("acme", &SdkSource::Path("../../sdk".into()), false);
        assert!(text.contains("freellm-sdk = { path = \"../../sdk\" }"), "{text}");
        assert!(text.contains("features = [\"fixtures\"]") && !text.contains("[workspace]"));
        let text = manifest("acme", &SdkSource::Version("0.1.0".into()), true);
        assert!(text.contains("freellm-sdk = { version = \"0.1.0\" }") && text.contains("[workspace]"), "{text}");
        assert!(text.contains("[profile.wasm]"));
        let own = render("acme", true, &SdkSource::Version("0.1.0".into()), true);
        let config = own.iter().find(|(p, _)| p == Path::new(".cargo/config.toml")).map(|(_, t)| t.as_str());
        assert!(config.is_some_and(|t| t.contains("+simd128")), "a crate of its own builds with SIMD");
        let member = render("acme", true, &SdkSource::Path("../../sdk".into()), false);
        assert!(!member.iter().any(|(p, _)| p.starts_with(".cargo")), "the repository's config applies");
    }

    #[test]
    fn a_crate_inside_a_checkout_uses_its_sdk_and_an_existing_folder_is_refused() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("sdk")).unwrap();
        std::fs::write(root.path().join("sdk/Cargo.toml"), "[package]\nname = \"freellm-sdk\"\n").unwrap();
        std::fs::write(root.path().join("Cargo.lock"), "# lock\n").unwrap();
        let options = ScaffoldOptions {
            name: "acme".into(),
            parent: root.path().join("work/adapters"),
            openai_compatible: false,
            sdk_path: None,
        };
        let done = write(&options).unwrap();
        assert_eq!(done.sdk, SdkSource::Path("../../../sdk".into()));
        assert_eq!(done.component, "wasm32-wasip2/wasm/freellm_adapter_acme.wasm");
        for file in ["Cargo.toml", "Cargo.lock", "src/lib.rs", "fixtures/stream-text.json"] {
            assert!(done.dir.join(file).is_file(), "{file}");
        }
        assert!(matches!(write(&options), Err(ScaffoldError::Exists(_))));
        let outside = tempfile::tempdir().unwrap();
        let done = write(&ScaffoldOptions { parent: outside.path().to_path_buf(), ..options.clone() }).unwrap();
        assert_eq!(done.sdk, SdkSource::Version(env!("CARGO_PKG_VERSION").into()));
        assert!(!done.dir.join("Cargo.lock").exists());
        let bad = ScaffoldOptions { name: "Acme".into(), ..options };
        assert!(matches!(write(&bad), Err(ScaffoldError::InvalidName(_))));
    }
}
