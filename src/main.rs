//! The `sora-shim` command: parse the command line, load and validate the config, serve.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sora_shim::app::App;
use sora_shim::config::{Config, Overrides};
use sora_shim::server::{Server, shutdown_signal};
use sora_shim::store::JobStore;

/// Exit code for a configuration that does not validate (EX_USAGE-like, as sysexits' EX_CONFIG family).
const EXIT_CONFIG: u8 = 64;

#[derive(Parser)]
#[command(
    name = "sora-shim",
    version,
    about = "A drop-in proxy that speaks the OpenAI Sora Videos API"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Serve(ConfigArgs),
    /// Validate a configuration offline and exit non-zero on any problem.
    Check(ConfigArgs),
    /// Run the Sora-contract scenarios against an endpoint over HTTP; exit non-zero on any failure.
    Conformance(sora_shim::conformance::Args),
    /// Shadow mode: `shadow report` compares each primary backend with its shadow candidates.
    #[command(subcommand)]
    Shadow(ShadowCommand),
}

#[derive(Subcommand)]
enum ShadowCommand {
    /// Success, latency, moderation, produced video and cost per route and candidate, from the job store.
    Report {
        #[command(flatten)]
        config: ConfigArgs,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args)]
struct ConfigArgs {
    /// Config file (TOML). Without it, the embedded default runs.
    #[arg(long, env = "SORA_SHIM_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on, e.g. 127.0.0.1:8080 (port 0 picks a free port).
    #[arg(long, env = "SORA_SHIM_LISTEN")]
    listen: Option<String>,
    /// Where the SQLite database and assets live (relative paths in the config resolve against it).
    #[arg(long, env = "SORA_SHIM_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

impl ConfigArgs {
    fn overrides(&self) -> Overrides {
        Overrides {
            file: self.config.clone(),
            listen: self.listen.clone(),
            data_dir: self.data_dir.clone(),
        }
    }

    fn load(&self) -> Result<Config, ExitCode> {
        Config::load(&self.overrides()).map_err(|e| {
            eprintln!("sora-shim: invalid configuration:\n{e}");
            ExitCode::from(EXIT_CONFIG)
        })
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SORA_SHIM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match cli.command {
        Command::Conformance(args) => sora_shim::conformance::cli(args),
        Command::Check(args) => match args.load() {
            Ok(config) => {
                eprintln!(
                    "sora-shim: {} is valid ({} models, {} backends)",
                    config.source,
                    config.models.len(),
                    config.backends.len()
                );
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Shadow(ShadowCommand::Report { config, json }) => match config.load() {
            Ok(config) => shadow_report(&config, json),
            Err(code) => code,
        },
        Command::Serve(args) => match args.load() {
            Ok(config) => serve(config, args.overrides()),
            Err(code) => code,
        },
    }
}

/// Reads the shadow pairs from the store the config names (safe while the server runs: SQLite WAL readers).
#[allow(clippy::print_stdout)]
fn shadow_report(config: &Config, json: bool) -> ExitCode {
    let sora_shim::config::StoreConfig::Sqlite { path } = &config.store;
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sora-shim: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let pairs = runtime.block_on(async {
        let store = sora_shim::store::sqlite::SqliteStore::open(path)?;
        store.shadow_pairs().await
    });
    let pairs = match pairs {
        Ok(p) => p,
        Err(e) => {
            eprintln!("sora-shim: cannot read the job store at {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    };
    let stats = sora_shim::shadow::report(&pairs, &config.prices);
    if json {
        match serde_json::to_string_pretty(&stats) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("sora-shim: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print!("{}", sora_shim::shadow::render(&stats));
    }
    ExitCode::SUCCESS
}

fn serve(config: Config, overrides: Overrides) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sora-shim: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        if config.is_default() {
            tracing::warn!(
                "running in open development mode: no config file, any non-empty API key is accepted and is its \
                 own tenant; do not expose this beyond this machine"
            );
        }
        let app = match App::start(config).await {
            Ok(app) => app,
            Err(e) => {
                eprintln!("sora-shim: cannot start: {e}");
                return ExitCode::FAILURE;
            }
        };
        let server = match Server::bind(std::sync::Arc::clone(&app)).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("sora-shim: cannot listen on {}: {e}", app.config.server.listen);
                app.stop().await;
                return ExitCode::FAILURE;
            }
        };
        match server.local_addr() {
            // The one line on stdout: tests and scripts read the bound address (port 0 picks one) from it.
            #[allow(clippy::print_stdout)]
            Ok(addr) => {
                println!("listening on http://{addr}");
                tracing::info!(%addr, data_dir = %app.config.data_dir.display(), "sora-shim listening");
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the bound address"),
        }
        // Models, routes and backends reload on SIGHUP and when the file changes (src/live.rs).
        app.tracker.spawn(app.reloader().watch(overrides));
        server.run(shutdown_signal()).await;
        ExitCode::SUCCESS
    })
}
