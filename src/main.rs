//! The `switchyard` command line: run a node, or check what it needs (more subcommands arrive
//! with their issues).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use switchyard::Node;
use switchyard::config::{Config, Overrides};
use switchyard::telemetry::{self, LogFormat, Telemetry};

/// switchyard: an actor-model message backbone for task and agent orchestration.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Log lines as text (coloured only on a terminal) or as JSON objects for log shippers
    #[arg(
        long,
        global = true,
        env = "SWITCHYARD_LOG_FORMAT",
        value_name = "FORMAT",
        default_value = "text"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// Where a node's configuration comes from: a file, `SWITCHYARD_*` variables, flags.
#[derive(clap::Args)]
struct Settings {
    /// TOML configuration file; SWITCHYARD_* variables and flags override it
    #[arg(long, env = "SWITCHYARD_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    overrides: Overrides,
}

impl Settings {
    fn load(self) -> anyhow::Result<Config> {
        Config::load(self.config.as_deref(), self.overrides).context("reading the configuration")
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run a node: the bus consumer, the actors, and the HTTP and gRPC servers.
    Node(Settings),
    /// Check that the configured bus and database can be reached; exit 0 only if both can.
    Doctor(Settings),
    /// Run a reference worker: link to a node as an agent and run a shell command per task.
    Agent(Box<AgentArgs>),
    /// Run the state database's migrations (up, down N), or show their status
    #[command(subcommand)]
    Migrate(MigrateAction),
    /// Print a digest of the state in a database, and each table's row count
    Digest(DigestArgs),
    /// Rebuild state into an empty database from the bus's events, through the node's mailboxes
    Replay(ReplayArgs),
}

/// `replay`'s start, target and the node's configuration (for its bus).
#[derive(clap::Args)]
struct ReplayArgs {
    /// Where to start: start, offset:<partition>=<n>,… or time:<RFC 3339>
    #[arg(long, value_name = "FROM", value_parser = switchyard::replay::parse_from)]
    from: broker_adapters::ReplayFrom,
    /// The database to rebuild into (migrated first); it must hold no state unless --resume
    #[arg(long, value_name = "URL")]
    into: String,
    /// Go on with a target that holds state already (what is applied stays applied)
    #[arg(long)]
    resume: bool,
    #[command(flatten)]
    settings: Settings,
}

/// `digest`'s database and the node's configuration.
#[derive(clap::Args)]
struct DigestArgs {
    /// The database to digest [default: the configured database]
    #[arg(long, value_name = "URL")]
    database: Option<String>,
    #[command(flatten)]
    settings: Settings,
}

/// What `migrate` does, each with the node's configuration (for its database).
#[derive(Subcommand)]
enum MigrateAction {
    /// Apply every pending migration
    Up(Settings),
    /// Revert the last N applied migrations
    Down {
        /// How many
        #[arg(value_name = "N")]
        n: u32,
        #[command(flatten)]
        settings: Settings,
    },
    /// List each migration, applied or pending
    Status(Settings),
}

/// The reference worker's flags.
#[derive(clap::Args)]
struct AgentArgs {
    /// The agent's display name
    #[arg(long, value_name = "NAME")]
    name: String,
    /// The agent's key (created with Keys.CreateKey, role agent)
    #[arg(
        long,
        env = "SWITCHYARD_TOKEN",
        value_name = "KEY",
        hide_env_values = true
    )]
    token: String,
    /// Shell command run once per task; the task is in SWITCHYARD_TASK_{ID,TITLE,SPEC,INPUTS}
    /// and on stdin as JSON; stdout (a JSON object, or text) is the result
    #[arg(long, value_name = "CMD")]
    exec: String,
    /// The node's gRPC address [default: the configured grpc address]
    #[arg(long, value_name = "ADDR")]
    node: Option<String>,
    /// Tasks run at once, at most
    #[arg(long, default_value_t = 1, value_name = "N")]
    max_concurrent: u32,
    /// A language the agent offers (repeatable); likewise --repo, --environment, --tool, --tag
    #[arg(long = "language", value_name = "NAME")]
    languages: Vec<String>,
    #[arg(long = "repo", value_name = "NAME", hide = true)]
    repos: Vec<String>,
    #[arg(long = "environment", value_name = "NAME", hide = true)]
    environments: Vec<String>,
    #[arg(long = "tool", value_name = "NAME", hide = true)]
    tools: Vec<String>,
    #[arg(long = "tag", value_name = "NAME", hide = true)]
    tags: Vec<String>,
    #[command(flatten)]
    settings: Settings,
}

impl AgentArgs {
    fn into_config(self) -> anyhow::Result<switchyard::worker::WorkerConfig> {
        let node = match self.node {
            Some(node) => node,
            None => self.settings.load()?.grpc.to_string(),
        };
        let node = if node.contains("://") {
            node
        } else {
            format!("http://{node}")
        };
        Ok(switchyard::worker::WorkerConfig {
            node,
            name: self.name,
            token: self.token,
            exec: self.exec,
            max_concurrent: self.max_concurrent.max(1),
            capabilities: actors::domain::Capabilities {
                repos: self.repos,
                languages: self.languages,
                environments: self.environments,
                tools: self.tools,
                tags: self.tags,
            },
        })
    }
}

fn main() -> ExitCode {
    // First, before anything opens a database: SQLite takes an allocator only then.
    switchyard::sqlite_on_jemalloc();
    let cli = Cli::parse();
    match run(cli.command, cli.log_format) {
        Ok(code) => code,
        Err(error) => {
            // One plain sentence: what failed and its first cause, not the whole chain.
            eprintln!("switchyard: {}", plain(&error));
            ExitCode::FAILURE
        }
    }
}

/// The error as one line: the outermost context and the innermost cause, where they differ.
fn plain(error: &anyhow::Error) -> String {
    let outer = error.to_string();
    let inner = error.root_cause().to_string();
    if outer == inner {
        outer
    } else {
        format!("{outer}: {inner}")
    }
}

fn run(command: Command, log_format: LogFormat) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new()?;
    // The OTLP exporter's client is made in the runtime it runs in.
    let _runtime = runtime.enter();
    match command {
        Command::Node(settings) => {
            let config = telemetry::while_configuring(log_format, || settings.load())?;
            let otlp = Some((config.otlp_endpoint.as_str(), config.node_id.as_str()))
                .filter(|(endpoint, _)| !endpoint.is_empty());
            let telemetry = telemetry::init(log_format, otlp)?;
            runtime.block_on(run_node(config, telemetry))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Doctor(settings) => {
            let config = telemetry::while_configuring(log_format, || settings.load())?;
            telemetry::init(log_format, None)?;
            Ok(runtime.block_on(doctor(config)))
        }
        Command::Migrate(action) => {
            use switchyard::migrate::Action;
            let (settings, action) = match action {
                MigrateAction::Up(settings) => (settings, Action::Up),
                MigrateAction::Down { n, settings } => (settings, Action::Down(n)),
                MigrateAction::Status(settings) => (settings, Action::Status),
            };
            // Its output is its stdout: no log lines among it.
            let config = telemetry::while_configuring(log_format, || settings.load())?;
            if config.database_url.is_empty() {
                std::fs::create_dir_all(&config.data_dir)
                    .with_context(|| format!("creating {}", config.data_dir.display()))?;
            }
            let lines =
                runtime.block_on(switchyard::migrate::run(&config.database_url(), action))?;
            for line in lines {
                println!("{line}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Digest(args) => {
            let config = telemetry::while_configuring(log_format, || args.settings.load())?;
            let state = config.data_dir.join("state.sqlite");
            if args.database.is_none() && config.database_url.is_empty() && !state.exists() {
                anyhow::bail!("there is no state database at {}", state.display());
            }
            let url = args.database.unwrap_or_else(|| config.database_url());
            let digest = runtime.block_on(async {
                let store = actors::Store::connect(&url)
                    .await
                    .context("connecting to the database")?;
                store.digest().await.context("reading the state")
            })?;
            let mut lines = vec![format!("digest {}", digest.hex)];
            lines.extend(digest.tables.iter().map(|(t, rows)| format!("{t} {rows}")));
            Ok(print_lines(lines))
        }
        Command::Replay(args) => {
            let config = telemetry::while_configuring(log_format, || args.settings.load())?;
            let bar = progress_bar();
            let progress = |at: actors::Progress| {
                if let Some(expected) = at.expected
                    && bar.length() != Some(expected)
                {
                    bar.set_length(expected);
                    bar.set_style(bar_style());
                }
                bar.set_position(at.read);
                if at.read.is_multiple_of(256) {
                    let per_s = at.read as f64 / bar.elapsed().as_secs_f64().max(1e-3);
                    bar.set_message(format!(", {per_s:.0} records/s"));
                }
                if bar.is_hidden() && at.read.is_multiple_of(10_000) {
                    match at.expected {
                        Some(expected) => eprintln!("replayed {} of {expected} records", at.read),
                        None => eprintln!("replayed {} records", at.read),
                    }
                }
            };
            let summary = runtime.block_on(switchyard::replay(
                &config,
                args.from,
                &args.into,
                args.resume,
                &progress,
            ))?;
            bar.finish_and_clear();
            let r = summary.replayed;
            let mut lines = Vec::new();
            if let Some(from) = &summary.resumed_from {
                lines.push(format!(
                    "resumed past the checkpoint, from {}",
                    switchyard::replay::show_from(from)
                ));
            }
            lines.push(format!(
                "replayed {} records: {} applied, {} refused, {} not applied now (run again with --resume), {} publishes held back",
                r.records, r.applied, r.refused, r.failed, summary.suppressed
            ));
            Ok(print_lines(lines))
        }
        Command::Agent(args) => {
            let config = telemetry::while_configuring(log_format, || (*args).into_config())?;
            telemetry::init(log_format, None)?;
            runtime.block_on(async {
                tokio::select! {
                    ran = switchyard::worker::run(config) => ran,
                    signal = shutdown_signal() => signal,
                }
            })?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A progress bar on a terminal (records, rate), hidden elsewhere.
fn progress_bar() -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new_spinner();
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{spinner} {pos} records replayed{msg}")
    {
        bar.set_style(style);
    }
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar
}

/// The replay's bar once the bus told how many records there are.
fn bar_style() -> indicatif::ProgressStyle {
    indicatif::ProgressStyle::with_template(
        "{bar:30} {pos}/{len} records replayed{msg}, {eta} left",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
}

/// Prints `lines` to stdout; a reader that went away (`| head`) ends it quietly.
fn print_lines(lines: Vec<String>) -> ExitCode {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for line in lines {
        if writeln!(out, "{line}").is_err() {
            break;
        }
    }
    ExitCode::SUCCESS
}

async fn run_node(config: Config, telemetry: Telemetry) -> anyhow::Result<()> {
    let mut node = Node::start(&config).await?;
    tracing::info!(
        node_id = %config.node_id,
        bus = %config.bus,
        data_dir = %config.data_dir.display(),
        http = %config.http,
        grpc = %config.grpc,
        "node started"
    );
    tokio::select! {
        signal = shutdown_signal() => signal?,
        () = node.failed() => {
            // Exit non-zero so that whatever runs the node (systemd, Kubernetes) restarts it.
            anyhow::bail!("the supervision tree failed: too many restarts; see the log above");
        }
    }
    tracing::info!("shutting down");
    node.shutdown().await?;
    telemetry.flush().await;
    tracing::info!("stopped");
    Ok(())
}

async fn doctor(config: Config) -> ExitCode {
    let checks = switchyard::doctor::run(&config).await;
    let mut healthy = true;
    for check in &checks {
        match &check.result {
            Ok(detail) => println!("{}: OK, {detail}", check.part),
            Err(problem) => {
                healthy = false;
                println!("{}: PROBLEM: {problem}", check.part);
            }
        }
    }
    if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn shutdown_signal() -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        interrupted = tokio::signal::ctrl_c() => interrupted?,
        _ = terminate.recv() => {}
    }
    Ok(())
}
