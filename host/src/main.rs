//! The `freellm` command line: `freellm serve [--config PATH]` and
//! `freellm plugin check <component.wasm> [--fixtures DIR]`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use freellm::config::Config;
use freellm::state::Gateway;

/// mimalloc: the request path allocates many small short-lived buffers
/// (headers, bodies, JSON values) across worker threads, where it is
/// markedly cheaper than the system allocator. Built without transparent
/// huge pages (`no_thp`): with them its eagerly committed arenas cost
/// ~16 MiB of resident memory at idle.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "freellm",
    version,
    about = "OpenAI-compatible gateway over free LLM tiers, with WebAssembly provider adapters"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// The configuration file.
        #[arg(long, default_value = "plugins.toml")]
        config: PathBuf,
    },
    /// Work with adapter components.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Load a component as the gateway would, run the conformance cases and
    /// golden fixtures against it, and report the first difference of each
    /// failure. Exits non-zero when anything fails.
    Check {
        /// The component (`.wasm`) to check.
        component: PathBuf,
        /// A directory of golden fixtures (`*.json`) to run as well.
        #[arg(long)]
        fixtures: Option<PathBuf>,
        /// A setting for `configure` in the conformance cases (repeatable),
        /// e.g. `--setting models=llama3`.
        #[arg(long = "setting", value_name = "KEY=VALUE", value_parser = freellm_runtime::check::parse_setting)]
        settings: Vec<(String, String)>,
        /// Where compiled code is cached (default: the system temp directory).
        #[arg(long)]
        cache_dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => serve(&config),
        Command::Plugin { command: PluginCommand::Check { component, fixtures, settings, cache_dir } } => {
            let options = freellm_runtime::check::CheckOptions {
                component,
                fixtures,
                settings,
                cache_dir: cache_dir.unwrap_or_else(freellm_runtime::check::default_cache_dir),
            };
            let result = freellm_runtime::check::run(&options);
            print!("{}", result.text);
            if result.passed { ExitCode::SUCCESS } else { ExitCode::FAILURE }
        }
    }
}

fn serve(path: &std::path::Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("freellm: {e}");
            return ExitCode::from(2);
        }
    };
    init_tracing(config.log_json);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("freellm: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let gw = Gateway::start(config).await?;
        let registry = gw.registry.load();
        if registry.enabled().next().is_none() {
            // Each provider of plugins.toml names its own key variable.
            tracing::warn!("{}", freellm::routing::router::no_providers_hint(&registry));
        }
        drop(registry);
        freellm::http::server::serve(gw).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "gateway failed");
            eprintln!("freellm: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("LOG_LEVEL")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(freellm::redact::LogWriter);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
