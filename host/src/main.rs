//! The `freellm` command line: `freellm serve [--config PATH]`,
//! `freellm plugin check <component.wasm> [--fixtures DIR]` and
//! `freellm plugin new <name> [--openai-compatible]`.

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
    /// Time an adapter's `map-request` on a request body (and its
    /// `normalize-response` on an upstream answer, its stream normalizer on
    /// a streamed answer), called as the gateway calls them. Several
    /// components are timed in turns, round after round, and each is
    /// reported against the first.
    Bench(BenchArgs),
    /// Write a new adapter crate (`<dir>/<name>`) that builds for
    /// wasm32-wasip2 and passes `plugin check` as written: `src/lib.rs` on
    /// the SDK, golden fixtures, and tests that run them natively.
    New {
        /// The adapter's name: its provider id and the crate's folder.
        name: String,
        /// Start from the SDK's OpenAI defaults (for a provider that serves
        /// OpenAI's chat completions API) instead of an API of its own shape.
        #[arg(long)]
        openai_compatible: bool,
        /// The folder to create the crate in.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// The SDK's folder (`sdk/` of a FreeLLM checkout) to depend on by
        /// path. Default: the checkout the crate is created in, if any, else
        /// `freellm-sdk` by version.
        #[arg(long)]
        sdk_path: Option<PathBuf>,
    },
}

/// `freellm plugin bench`'s arguments.
#[derive(clap::Args)]
struct BenchArgs {
    /// The components (`.wasm`) to time.
    #[arg(required = true)]
    components: Vec<PathBuf>,
    /// The request body (a chat completion request, JSON) each call gets.
    #[arg(long)]
    body: PathBuf,
    /// An upstream's 2xx answer (JSON) to time `normalize-response` on.
    #[arg(long)]
    answer: Option<PathBuf>,
    /// An upstream's 2xx streamed answer, as sent (SSE or NDJSON, as the
    /// adapter declares), to time the stream normalizer on, per event.
    #[arg(long)]
    stream_answer: Option<PathBuf>,
    /// The upstream model in the call context (default: the adapter's
    /// default model).
    #[arg(long)]
    model: Option<String>,
    /// Call as for a streamed answer.
    #[arg(long)]
    stream: bool,
    /// Calls per component in each round.
    #[arg(long, default_value_t = 2000)]
    calls: u32,
    /// Rounds.
    #[arg(long, default_value_t = 5)]
    rounds: u32,
    /// A setting for `configure` (repeatable), e.g. `--setting models=llama3`.
    #[arg(long = "setting", value_name = "KEY=VALUE", value_parser = freellm_runtime::check::parse_setting)]
    settings: Vec<(String, String)>,
    /// Where compiled code is cached (default: the system temp directory).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
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
        Command::Plugin { command: PluginCommand::Bench(args) } => {
            let read = |path: &PathBuf| {
                std::fs::read(path).map_err(|e| eprintln!("freellm: cannot read {}: {e}", path.display()))
            };
            let Ok(body) = read(&args.body) else { return ExitCode::FAILURE };
            let (Ok(answer), Ok(stream_answer)) =
                (args.answer.as_ref().map(read).transpose(), args.stream_answer.as_ref().map(read).transpose())
            else {
                return ExitCode::FAILURE;
            };
            let options = freellm_runtime::bench::BenchOptions {
                components: args.components,
                body,
                answer,
                stream_answer,
                model: args.model,
                stream: args.stream,
                calls: args.calls,
                rounds: args.rounds,
                settings: args.settings,
                cache_dir: args.cache_dir.unwrap_or_else(freellm_runtime::check::default_cache_dir),
            };
            match freellm_runtime::bench::run(&options) {
                Ok(report) => {
                    print!("{report}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("freellm: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Plugin { command: PluginCommand::New { name, openai_compatible, dir, sdk_path } } => {
            new_adapter(freellm_runtime::scaffold::ScaffoldOptions { name, parent: dir, openai_compatible, sdk_path })
        }
    }
}

fn new_adapter(options: freellm_runtime::scaffold::ScaffoldOptions) -> ExitCode {
    use freellm_runtime::scaffold::{self, SdkSource};
    let done = match scaffold::write(&options) {
        Ok(done) => done,
        Err(e) => {
            eprintln!("freellm: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("wrote {} ({})", done.dir.display(), done.package);
    for file in &done.files {
        println!("  {}", file.display());
    }
    match &done.sdk {
        SdkSource::Path(path) => println!("freellm-sdk: the checkout's, by path ({path})"),
        SdkSource::Version(v) => println!("freellm-sdk: version {v} (use --sdk-path to build against a checkout)"),
    }
    let dir = done.dir.display();
    println!("\nnext:");
    println!("  cd {dir} && cargo test");
    println!("  cargo build --profile wasm --target wasm32-wasip2");
    println!("  freellm plugin check target/{} --fixtures fixtures", done.component);
    ExitCode::SUCCESS
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
