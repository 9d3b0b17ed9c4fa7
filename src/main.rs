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
/// Exit code of an offline command whose data directory holds no job store (sysexits' EX_NOINPUT).
const EXIT_NO_STORE: u8 = 66;

#[derive(Parser)]
#[command(
    name = "sora-shim",
    version,
    about = "A drop-in proxy that speaks the OpenAI Sora Videos API"
)]
struct Cli {
    /// Log format on stderr: `text` (default) or `json` (one JSON object per line).
    #[arg(long, global = true, env = "SORA_SHIM_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Serve {
        #[command(flatten)]
        config: ConfigArgs,
        /// Address to listen on, e.g. 127.0.0.1:8080 (port 0 picks a free port).
        #[arg(long, env = "SORA_SHIM_LISTEN")]
        listen: Option<String>,
        /// Allow open development mode (no tenants configured: any key is accepted) on a non-loopback address.
        #[arg(long, env = "SORA_SHIM_ALLOW_OPEN_MODE")]
        allow_open_mode: bool,
    },
    /// Validate a configuration offline: every problem is listed and the exit code is 64; warnings (a route whose
    /// weights do not sum to 100, sizes or durations a backend would round) are printed but do not fail.
    Check {
        #[command(flatten)]
        config: ConfigArgs,
        /// Check that each secret's environment variable is named, without reading any (CI without secrets).
        #[arg(long)]
        without_secrets: bool,
    },
    /// Run the Sora-contract scenarios against an endpoint over HTTP; exit non-zero on any failure.
    Conformance(sora_shim::conformance::Args),
    /// Shadow mode: `shadow report` compares each primary backend with its shadow candidates.
    #[command(subcommand)]
    Shadow(ShadowCommand),
    /// API keys: `key hash` prints the digest of a key read from stdin, for `[tenants.NAME] keys`.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Write every job record (JSON Lines) and its asset files into a directory (layout in docs/production.md, "Export and import").
    Export {
        #[command(flatten)]
        config: ConfigArgs,
        /// The directory to write (created; must not hold an export already).
        #[arg(long)]
        out: PathBuf,
        /// Only this tenant's records (its configured name, or in open mode its key's digest).
        #[arg(long)]
        tenant: Option<String>,
        /// Only records created on or after this date (YYYY-MM-DD, UTC) or unix time.
        #[arg(long)]
        since: Option<String>,
    },
    /// Read an export into the store and asset storage the config names; records already there are left alone.
    Import {
        #[command(flatten)]
        config: ConfigArgs,
        /// The export's directory.
        dir: PathBuf,
        /// Create the job store if the data directory has none (a new deployment); without it, a missing store
        /// is refused, as a mistyped data directory would otherwise "succeed" into an empty new one.
        #[arg(long)]
        new_store: bool,
    },
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Reads one key from stdin (surrounding whitespace ignored) and prints `sha256:<hex>`.
    Hash,
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
    /// Where the SQLite database and assets live (relative paths in the config resolve against it). Precedence:
    /// this flag, then SORA_SHIM_DATA_DIR, then `[store] data_dir` in the config file, then ./data.
    #[arg(long, env = "SORA_SHIM_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

impl ConfigArgs {
    fn overrides(&self, listen: Option<String>) -> Overrides {
        Overrides {
            file: self.config.clone(),
            listen,
            data_dir: self.data_dir.clone(),
            ..Overrides::default()
        }
    }

    fn load(&self) -> Result<Config, ExitCode> {
        load(&self.overrides(None))
    }

    /// The config of an offline command that reads or writes an existing store: refuses a data directory with no
    /// job store (a mistyped path or a missing `--data-dir` must not "succeed" on a new, empty store).
    fn load_existing(&self) -> Result<Config, ExitCode> {
        let config = self.load()?;
        if config.store_exists() {
            return Ok(config);
        }
        eprintln!(
            "sora-shim: no job store at {} (data directory {}). The data directory comes from --data-dir, then \
             SORA_SHIM_DATA_DIR, then [store] data_dir in the config file, then ./data: point one of them at the \
             directory `serve` uses.",
            config.store.describe(),
            config.data_dir.display()
        );
        Err(ExitCode::from(EXIT_NO_STORE))
    }
}

fn load(overrides: &Overrides) -> Result<Config, ExitCode> {
    Config::load(overrides).map_err(|e| {
        eprintln!("sora-shim: invalid configuration:\n{e}");
        ExitCode::from(EXIT_CONFIG)
    })
}

/// Log lines formatted but not yet written before a thread that logs has to wait (~5 MB of typical lines).
const LOG_LINES_WAITING: usize = 16_384;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("SORA_SHIM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Log lines are formatted on the thread that logs them and written by one thread of their own, many lines
    // per write: writing each line to stderr on the request path (a lock and a syscall per line) was 11% of the
    // CPU of a GET under load. Never lossy: when LOG_LINES_WAITING lines wait, the next one waits its turn
    // rather than being dropped. The guard writes what is left when main returns; only a kill -9 or an abort
    // loses the few lines not yet written.
    let (writer, _log_guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(LOG_LINES_WAITING)
        .thread_name("sora-shim-log")
        .finish(std::io::BufWriter::new(std::io::stderr()));
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer);
    match cli.log_format {
        LogFormat::Json => logs.json().flatten_event(true).with_current_span(false).init(),
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
    match cli.command {
        Command::Key(KeyCommand::Hash) => key_hash(),
        Command::Export {
            config,
            out,
            tenant,
            since,
        } => match config.load_existing() {
            Ok(config) => transfer(&config, Transfer::Export { out, tenant, since }),
            Err(code) => code,
        },
        Command::Import { config, dir, new_store } => {
            let loaded = if new_store {
                config.load()
            } else {
                config.load_existing()
            };
            match loaded {
                Ok(config) => transfer(&config, Transfer::Import { dir }),
                Err(code) => code,
            }
        }
        Command::Conformance(args) => sora_shim::conformance::cli(args),
        Command::Check {
            config: args,
            without_secrets,
        } => {
            let mut overrides = args.overrides(None);
            if without_secrets {
                overrides.secrets = sora_shim::http::SecretSource::Unread;
            }
            match load(&overrides) {
                Ok(config) => {
                    for warning in &config.warnings {
                        eprintln!("warning: {warning}");
                    }
                    eprintln!(
                        "sora-shim: {} is valid ({} models, {} backends{}{})",
                        config.source,
                        config.models.len(),
                        config.backends.len(),
                        match config.warnings.len() {
                            0 => String::new(),
                            n => format!(", {n} warning{}", if n == 1 { "" } else { "s" }),
                        },
                        if without_secrets {
                            "; secret values not read"
                        } else {
                            ""
                        }
                    );
                    ExitCode::SUCCESS
                }
                Err(code) => code,
            }
        }
        Command::Shadow(ShadowCommand::Report { config, json }) => match config.load_existing() {
            Ok(config) => shadow_report(&config, json),
            Err(code) => code,
        },
        Command::Serve {
            config: args,
            listen,
            allow_open_mode,
        } => {
            let overrides = args.overrides(listen);
            match load(&overrides) {
                Ok(config) => serve(config, overrides, allow_open_mode),
                Err(code) => code,
            }
        }
    }
}

/// A single-threaded runtime for the offline subcommands.
fn one_thread_runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("sora-shim: cannot start the runtime: {e}");
            ExitCode::FAILURE
        })
}

/// Reads the shadow pairs from the store the config names (safe while the server runs: SQLite WAL readers).
#[allow(clippy::print_stdout)]
fn shadow_report(config: &Config, json: bool) -> ExitCode {
    let runtime = match one_thread_runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let pairs = runtime.block_on(async {
        let store = sora_shim::app::open_store(&config.store).await?;
        let pairs = store.shadow_pairs().await?;
        Ok::<_, sora_shim::store::StoreError>((pairs, sora_shim::shadow::missed(store.as_ref()).await?))
    });
    let (pairs, missed) = match pairs {
        Ok(p) => p,
        Err(e) => {
            eprintln!(
                "sora-shim: cannot read the job store ({}): {e}",
                config.store.describe()
            );
            return ExitCode::FAILURE;
        }
    };
    let stats = sora_shim::shadow::report(&pairs, &missed, &config.prices, &config.models);
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

enum Transfer {
    Export {
        out: PathBuf,
        tenant: Option<String>,
        since: Option<String>,
    },
    Import {
        dir: PathBuf,
    },
}

/// `export` / `import` against the store and asset storage the config names (the server may be running:
/// SQLite takes a second writer, and imported records are new ids).
#[allow(clippy::print_stdout)]
fn transfer(config: &Config, what: Transfer) -> ExitCode {
    let runtime = match one_thread_runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let result = runtime.block_on(async {
        let store: std::sync::Arc<dyn JobStore> = sora_shim::app::open_store(&config.store)
            .await
            .map_err(|e| format!("job store: {e}"))?;
        let assets = sora_shim::assets::AssetStore::open(&config.assets.storage).map_err(|e| e.to_string())?;
        match what {
            Transfer::Export { out, tenant, since } => {
                let since = since.as_deref().map(sora_shim::export::parse_since).transpose()?;
                sora_shim::export::export(&store, &assets, &out, tenant.as_deref(), since)
                    .await
                    .map(|s| ("exported", s))
                    .map_err(|e| e.to_string())
            }
            Transfer::Import { dir } => sora_shim::export::import(&store, &assets, &dir)
                .await
                .map(|s| ("imported", s))
                .map_err(|e| e.to_string()),
        }
    });
    match result {
        Ok((verb, s)) => {
            println!(
                "{verb} {} jobs, {} characters, {} asset files ({} bytes); {} already present, {} files missing",
                s.jobs, s.characters, s.asset_files, s.asset_bytes, s.skipped, s.missing_files
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sora-shim: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `sora-shim key hash`: the digest a tenant's `keys` list takes. The key comes on stdin, never as an argument
/// (which would land in shell history and `ps`).
#[allow(clippy::print_stdout)]
fn key_hash() -> ExitCode {
    let mut key = String::new();
    if let Err(e) = std::io::Read::read_to_string(&mut std::io::stdin(), &mut key) {
        eprintln!("sora-shim: cannot read the key from stdin: {e}");
        return ExitCode::FAILURE;
    }
    let key = key.trim();
    if key.is_empty() {
        eprintln!("sora-shim: no key on stdin (try: printf %s \"$KEY\" | sora-shim key hash)");
        return ExitCode::from(EXIT_CONFIG);
    }
    println!("{}", sora_shim::auth::format_digest(&sora_shim::auth::hash_key(key)));
    ExitCode::SUCCESS
}

/// One line an operator can read at a glance: where it listens, where the jobs and videos live, which backend
/// serves each model, and how many unfinished jobs it picked up again; then any config warnings.
async fn startup_summary(app: &App, addr: std::net::SocketAddr, scheme: &str) {
    let config = &app.config;
    let models: Vec<String> = (config.models.iter())
        .map(|(name, m)| format!("{name} → {}", m.route.backends().collect::<Vec<_>>().join(", ")))
        .collect();
    let resumed: u64 = match app.store.queue_depth().await {
        Ok(by_state) => by_state.iter().map(|(_, n)| n).sum(),
        Err(_) => 0,
    };
    tracing::info!(
        listen = %format!("{scheme}://{addr}"),
        store = %config.store.describe(),
        assets = %app.assets.describe(),
        models = %models.join("; "),
        resumed_jobs = resumed,
        "sora-shim listening"
    );
    for warning in &config.warnings {
        tracing::warn!("config: {warning}");
    }
}

fn serve(config: Config, overrides: Overrides, allow_open_mode: bool) -> ExitCode {
    let open = config.access.is_open();
    if open && !config.server.listen.ip().is_loopback() && !allow_open_mode {
        eprintln!(
            "sora-shim: refusing to start: no tenants are configured (open development mode: any API key is \
             accepted) and {} is not a loopback address. Configure [tenants] with keys, listen on 127.0.0.1, or \
             pass --allow-open-mode if this is really what you want.",
            config.server.listen
        );
        return ExitCode::from(EXIT_CONFIG);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sora-shim: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        if open {
            tracing::warn!(
                "running in open development mode: no tenants configured, any non-empty API key is accepted and is \
                 its own tenant; do not expose this beyond this machine"
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
                eprintln!("sora-shim: {e}");
                app.stop().await;
                return ExitCode::FAILURE;
            }
        };
        match server.local_addr() {
            // The one line on stdout: tests and scripts read the bound address (port 0 picks one) from it.
            #[allow(clippy::print_stdout)]
            Ok(addr) => {
                println!("listening on {}://{addr}", server.scheme());
                startup_summary(&app, addr, server.scheme()).await;
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the bound address"),
        }
        // Models, routes and backends reload on SIGHUP and when the file changes (src/live.rs).
        app.tracker.spawn(app.reloader().watch(overrides));
        server.run(shutdown_signal()).await;
        ExitCode::SUCCESS
    })
}
