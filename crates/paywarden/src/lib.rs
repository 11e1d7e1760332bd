//! The `paywarden` command line: glue between the command line and the library crates.
//!
//! A library so that a build can be the same program with other migrations: the shipped
//! binary (`src/main.rs`) is [`main!`] with none added; the schema rollout tests' second
//! releases (`examples/schema_*.rs`) add theirs.

use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};
use paywarden_acquirer::{SandboxAcquirer, SandboxConfig};
use paywarden_api::faults::Fault;
use paywarden_api::{hash_key, new_id, new_publishable_key, new_secret_key, now, ApiConfig, App};
use paywarden_store::{ApiKeyRecord, ExtraMigrations, Merchant, PgOptions, PgStore, SchemaOptions, SqliteOptions, SqliteStore, Store, Write, WriteBatch};
use rand::RngCore;

mod datadir;
mod drill;
mod guard;
mod rollout;
mod listen;

/// Defines a paywarden executable's `main`, with jemalloc as its global allocator and heap
/// profiling switched on, running the command line with the migrations `extra` adds to the
/// shipped ones (`paywarden_store::ExtraMigrations::default()` for none).
///
/// jemalloc: its statistics feed the memory guard, and its sampling heap profiler names
/// leaking allocation sites. Its options are read before `main` at the first allocation:
/// heap profiling on, one sample per 512 KiB allocated on average (2^19). The
/// `_RJEM_MALLOC_CONF` environment variable overrides them (e.g. `prof_active:false` to
/// measure what sampling costs); the cost is measured in BENCHMARKS.md. Both live in the
/// executable itself: an exported symbol in a library would not be linked.
#[macro_export]
macro_rules! main {
    ($extra:expr) => {
        #[global_allocator]
        static GLOBAL: $crate::__private::Jemalloc = $crate::__private::Jemalloc;

        #[allow(unsafe_code)]
        #[unsafe(export_name = "_rjem_malloc_conf")]
        pub static MALLOC_CONF: &[u8; 45] = b"prof:true,prof_active:true,lg_prof_sample:19\0";

        fn main() -> std::process::ExitCode {
            $crate::main_with($extra)
        }
    };
}

#[doc(hidden)]
pub mod __private {
    pub use tikv_jemallocator::Jemalloc;
}

/// The schema settings every store this process opens uses: the migrations the build adds,
/// and the release label recorded with what it applies (`PAYWARDEN_RELEASE`, which `up` sets
/// for its instances, else `paywarden VERSION`).
static SCHEMA: std::sync::OnceLock<SchemaOptions> = std::sync::OnceLock::new();

/// Longest `PAYWARDEN_RELEASE`.
const RELEASE_LABEL_CHARS_MAX: usize = 200;

pub(crate) fn schema_options() -> SchemaOptions {
    SCHEMA.get().cloned().unwrap_or_default()
}

fn sqlite_options() -> SqliteOptions {
    SqliteOptions { schema: schema_options(), ..SqliteOptions::default() }
}

#[derive(Parser)]
#[command(name = "paywarden", version, about = "A Stripe-compatible payment gateway that cannot be taken down by its own deploys.")]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "PAYWARDEN_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Switch {
    On,
    Off,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run one gateway instance: the payments API on --listen, SQLite in --data-dir.
    Serve(ServeArgs),
    /// Manage merchants' secret keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Check the books.
    Ledger {
        #[command(subcommand)]
        command: LedgerCommand,
    },
    /// Open-loop payment traffic against a gateway, with latency, errors and the target's
    /// memory in the report; exits 1 if a threshold fails.
    Load(LoadArgs),
    /// The rollout controller: a proxy on --listen, the stable release's instance, the admin
    /// API on --admin-listen. The embedded default: SQLite in --data-dir, sandbox acquirer.
    Up(rollout::UpArgs),
    /// Roll out a new release: canary and baseline, judged at every step; exit 0 if promoted,
    /// 1 if rolled back.
    Deploy(rollout::DeployArgs),
    /// Roll back the deployment in progress (the stable takes all traffic at once).
    Rollback(rollout::AdminArgs),
    /// What runs: stable, canary and its weight, the last deployment.
    Status(rollout::StatusArgs),
    /// Every deployment and its outcome.
    History(rollout::StatusArgs),
    /// The canary judge alone, for gateways something else runs (Argo Rollouts on
    /// Kubernetes): scrapes the canary's and the stable's pods and serves the verdict.
    Judge(rollout::JudgeArgs),
    /// Write a deployment's post-deployment review (HTML, Markdown) and, for an incident,
    /// the report draft.
    Review(drill::ReviewArgs),
    /// Replay an incident on a sandbox and score detection, diagnosis and rollback.
    Drill(drill::DrillArgs),
    /// Create or upgrade the schema (serve and up also do it at start); with --plan, only say
    /// what this release would do there.
    Migrate(MigrateArgs),
}

#[derive(clap::Args)]
struct MigrateArgs {
    /// The SQLite data dir (or pass --database).
    #[arg(long, required_unless_present = "database")]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    db: DatabaseArgs,
    /// Write nothing: show the schema's history, the migrations this release would apply and
    /// whether it can run on this database (exit 0 if it can, 1 if not).
    #[arg(long)]
    plan: bool,
    /// Print JSON (with --plan: the schema report `paywarden up` reads before a deployment).
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct LoadArgs {
    /// The gateway's base URL.
    #[arg(long, default_value = "http://127.0.0.1:4242")]
    target: String,
    /// A merchant's secret key (sk_test_...).
    #[arg(long, env = "PAYWARDEN_KEY", hide_env_values = true)]
    key: String,
    /// `payments` (the default mix), `noop` (GET /healthz, to measure the tool itself) or a
    /// TOML scenario file (mix, executor and stages, thresholds).
    #[arg(long, default_value = "payments")]
    scenario: String,
    /// Iterations per second (constant-arrival-rate); replaces a file's executor.
    #[arg(long)]
    rate: Option<f64>,
    /// How long to run (e.g. 30s, 10m); sets a file's constant executor's length.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// A pass/fail rule, e.g. 'p99<50ms', 'error_rate<0.1%', 'dropped<1%', 'confirm.p99<80ms'.
    /// Repeatable; added to the file's.
    #[arg(long = "threshold", value_name = "EXPR")]
    thresholds: Vec<String>,
    /// Most iterations in flight; past it, iterations are dropped (counted), not queued.
    #[arg(long)]
    max_in_flight: Option<usize>,
    /// Most connections to the target at once; requests beyond it wait for a free one (their
    /// latency counts from their scheduled start). 1 to 10000, at most --max-in-flight.
    #[arg(long, default_value_t = paywarden_load::run::CONNECTIONS_DEFAULT)]
    connections: usize,
    /// Write summary.json and report.html here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Per-request timeout.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Do not read the target's /metrics.
    #[arg(long)]
    no_memory: bool,
    /// Worker threads of the generator (default: one per core). On the target's own machine,
    /// 1 leaves the other cores to the target, as `wrk -t1` does: everything then runs on
    /// that one thread.
    #[arg(long)]
    threads: Option<usize>,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on (port 0 picks a free port; the chosen address is printed).
    #[arg(long, default_value = "127.0.0.1:4242")]
    listen: SocketAddr,
    /// Directory for the SQLite database, the card-fingerprint and webhook keys; created if missing.
    /// With --database it holds the keys only: replicas must share them (the same directory,
    /// or copies of fingerprint.key and webhook.key).
    #[arg(long)]
    data_dir: PathBuf,
    #[command(flatten)]
    db: DatabaseArgs,
    /// Latency the sandbox acquirer adds to every call (e.g. 0ms, 20ms).
    #[arg(long, default_value = "0ms", value_parser = humantime::parse_duration)]
    acquirer_latency: Duration,
    /// Batches that may wait for the writer; past it, requests get 503 with Retry-After.
    #[arg(long, default_value_t = SqliteOptions::default().writer_queue_max)]
    writer_queue_max: usize,
    /// Largest request body, in bytes; past it, 413.
    #[arg(long, default_value_t = ApiConfig::default().body_bytes_max)]
    body_bytes_max: usize,
    /// API requests handled at once; past it, 429 with Retry-After (probes and /metrics are
    /// never refused). 1 to 100000.
    #[arg(long, default_value_t = ApiConfig::default().requests_in_flight_max)]
    requests_in_flight_max: usize,
    /// Client connections at once; past it, accepting pauses until one closes. 1 to 1000000.
    #[arg(long, default_value_t = listen::CONNECTIONS_DEFAULT)]
    connections_max: usize,
    /// How long a connection may take to send a request head, or stay idle between requests,
    /// before it is closed (1s to 1h). Keep it above the idle timeout of a load balancer in
    /// front (AWS ALB: 60 s).
    #[arg(long, default_value = "65s", value_parser = humantime::parse_duration)]
    header_read_timeout: Duration,
    /// Inject a fault, for tests and drills: leak=BYTES (kept on every confirmed payment),
    /// errors=RATE (that fraction of payment requests answered 500), latency=DURATION; or a
    /// benign memory pattern a leak detector must not flag: cache=BYTES (1 KiB per payment,
    /// capped), sawtooth=BYTES (1 KiB per payment, freed at BYTES). Repeatable; off unless named.
    #[arg(long = "fault", value_name = "KIND=VALUE")]
    faults: Vec<Fault>,
    /// Memory the leak detector forecasts exhaustion against, in bytes. Default: the cgroup's
    /// limit, else physical memory.
    #[arg(long)]
    memory_limit: Option<u64>,
    /// Run the memory guard (sampler, leak detector, heap-profile diffs, alerts). `off` is for
    /// measuring what it costs; /metrics then has no heap or leak series.
    #[arg(long, value_enum, default_value_t = Switch::On)]
    memory_guard: Switch,
    /// How often the memory guard samples the heap and the RSS.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    memory_sample_interval: Duration,
    /// POST alert events (memory leak, payment failure burn rate) to this URL in
    /// the body Alertmanager sends its webhook receivers (version 4), so any receiver built
    /// for Alertmanager takes them. http only; retried with backoff, at most 5 attempts.
    #[arg(long, value_name = "URL")]
    alert_webhook: Option<String>,
    /// Bearer token for /admin/* and /debug/* (leak report, alerts, heap profile); without
    /// one, those endpoints are off.
    #[arg(long, env = "PAYWARDEN_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// How long a failing webhook delivery is retried (from its event) before it is given
    /// up; an endpoint failing this long without a success is disabled. Stripe: 3 days.
    #[arg(long, default_value = "3d", value_parser = humantime::parse_duration)]
    webhook_retry_horizon: Duration,
    /// The first retry's delay; doubled (with jitter) per attempt up to 1 h.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    webhook_backoff_base: Duration,
    /// Per-attempt timeout of a webhook delivery.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    webhook_timeout: Duration,
    /// Webhook deliveries in flight at once.
    #[arg(long, default_value_t = 16)]
    webhook_concurrency: usize,
    #[command(flatten)]
    tls: TlsArgs,
}

/// TLS termination (rustls): both files, or neither for plain HTTP.
#[derive(clap::Args, Clone, Default)]
pub(crate) struct TlsArgs {
    /// PEM certificate chain, leaf first; with --tls-key, the listener speaks HTTPS.
    #[arg(long, requires = "tls_key", value_name = "PEM")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of --tls-cert.
    #[arg(long, requires = "tls_cert", value_name = "PEM")]
    pub(crate) tls_key: Option<PathBuf>,
}

impl TlsArgs {
    /// The server configuration, or None without TLS; an error names the file.
    pub(crate) fn config(&self) -> anyhow::Result<Option<std::sync::Arc<rustls::ServerConfig>>> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(c), Some(k)) => Ok(Some(paywarden_rollout::tls::server_config(c, k).map_err(anyhow::Error::msg)?)),
            _ => Ok(None),
        }
    }
}

/// Where the data is: SQLite in --data-dir (the default) or a PostgreSQL database.
#[derive(clap::Args, Clone)]
pub(crate) struct DatabaseArgs {
    /// A PostgreSQL database (postgres://user:password@host:port/db) instead of SQLite in
    /// --data-dir; every replica of the gateway may share it. Migrated at start.
    #[arg(long, env = "PAYWARDEN_DATABASE", hide_env_values = true)]
    pub(crate) database: Option<String>,
    /// PostgreSQL connections this process opens at most; budget replicas x this under the
    /// server's max_connections.
    #[arg(long, env = "PAYWARDEN_POOL_MAX", default_value_t = PgOptions::default().pool_max)]
    pub(crate) pool_max: u32,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a merchant (if new) and print a new sk_test_ key for it. Safe while `serve` runs.
    Create {
        /// The SQLite data dir (or pass --database).
        #[arg(long, required_unless_present = "database")]
        data_dir: Option<PathBuf>,
        #[command(flatten)]
        db: DatabaseArgs,
        /// Merchant name: 1 to 100 characters.
        #[arg(long)]
        merchant: String,
    },
}

#[derive(Subcommand)]
enum LedgerCommand {
    /// Recompute every balance and invariant; exit 0 only if the books balance.
    Verify {
        /// The SQLite data dir (or pass --database).
        #[arg(long, required_unless_present = "database")]
        data_dir: Option<PathBuf>,
        #[command(flatten)]
        db: DatabaseArgs,
    },
}

/// Most webhook deliveries in flight (`--webhook-concurrency`).
const WEBHOOK_CONCURRENCY_MAX: usize = 1024;

/// Flags people reach for that paywarden spells otherwise, and what to write instead.
const FLAG_CONFUSIONS: &[(&[&str], &str)] = &[
    (&["--port", "--bind", "--addr", "--address", "--host"], "--listen takes an address and port, e.g. --listen 127.0.0.1:4242"),
    (&["--data", "--dir", "--datadir", "--data-directory", "--db-dir"], "--data-dir DIR is the directory for the SQLite database and the keys"),
    (&["--db", "--database-url", "--postgres", "--pg", "--url"], "--database postgres://user@host:5432/db (or PAYWARDEN_DATABASE) selects PostgreSQL"),
    (&["--token", "--admin-key"], "the admin token is --admin-token (up, judge) or --token (deploy, rollback, status, history)"),
    (&["--key", "--api-key", "--secret"], "a merchant's secret key is --key (load), or PAYWARDEN_KEY"),
];

/// Clap's errors, with two changes for a mistyped flag: the tip is ours when we know the
/// confusion, clap's only when it is close (clap suggested `--stop-grace` for `--port`), and
/// the usage line is the command's own (clap's showed its suggestion as if it were required).
fn cli_error(e: clap::Error) -> ExitCode {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if e.kind() != ErrorKind::UnknownArgument {
        let _ = e.print();
        return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
    }
    let arg = match e.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(a)) => a.clone(),
        _ => String::new(),
    };
    let flag = arg.split('=').next().unwrap_or("").to_string();
    let clap_suggestion = match e.get(ContextKind::SuggestedArg) {
        Some(ContextValue::String(a)) => Some(a.clone()),
        _ => None,
    };
    let tip = FLAG_CONFUSIONS
        .iter()
        .find(|(names, _)| names.contains(&flag.as_str()))
        .map(|(_, tip)| tip.to_string())
        .or_else(|| clap_suggestion.filter(|s| close_flags(&flag, s)).map(|s| format!("a similar flag exists: {s}")));
    let args: Vec<String> = std::env::args().collect();
    let mut cmd = <Cli as clap::CommandFactory>::command();
    cmd.build();
    // The deepest subcommand named on the command line, for its usage line.
    let mut sub = &cmd;
    for a in args.iter().skip(1).filter(|a| !a.starts_with('-')) {
        match sub.find_subcommand(a) {
            Some(s) => sub = s,
            None => break,
        }
    }
    let usage = sub.clone().bin_name(format!("paywarden {}", sub.get_name())).render_usage();
    let usage = if sub.get_name() == cmd.get_name() { cmd.clone().render_usage() } else { usage };
    eprintln!("error: unexpected argument '{arg}'");
    if let Some(t) = tip {
        eprintln!("\n  tip: {t}");
    }
    eprintln!("\n{usage}\n\nFor more information, try '--help'.");
    ExitCode::from(2)
}

/// Whether clap's suggestion is close enough to offer: a few edits apart relative to length.
fn close_flags(typed: &str, suggested: &str) -> bool {
    let d = strsim::levenshtein(typed, suggested);
    d <= 2 || d * 3 <= typed.len().max(suggested.len())
}

/// Runs the command line, with `extra` migrations beside the shipped ones.
pub fn main_with(extra: ExtraMigrations) -> ExitCode {
    // Started as the memory guard's symbolizer helper (this binary again, to name a heap
    // diff's addresses out of the service's process): answer and exit before anything else.
    memguard::symbolizer::serve_if_helper();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return cli_error(e),
    };
    let long_running = matches!(cli.command, Command::Serve(_) | Command::Up(_) | Command::Judge(_) | Command::Load(_) | Command::Drill(_));
    init_logging(cli.log_format, long_running);
    let mut schema = SchemaOptions { extra, ..SchemaOptions::default() };
    if let Ok(label) = std::env::var("PAYWARDEN_RELEASE") {
        if label.is_empty() || label.chars().count() > RELEASE_LABEL_CHARS_MAX || label.chars().any(char::is_control) {
            eprintln!("error: PAYWARDEN_RELEASE must be 1 to {RELEASE_LABEL_CHARS_MAX} printable characters");
            return ExitCode::from(2);
        }
        schema.release = label;
    }
    let _ = SCHEMA.set(schema);
    // Before any thread exists: the first heap profile would otherwise race a first DNS lookup
    // for glibc's loader locks and hang the process (memguard::profiler docs).
    memguard::profiler::read_mappings_before_threads();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Command::Load(LoadArgs { threads: Some(n), .. }) = &cli.command {
        if *n == 0 || *n > LOAD_THREADS_MAX {
            eprintln!("error: --threads must be 1 to {LOAD_THREADS_MAX}");
            return ExitCode::from(2);
        }
        if *n == 1 {
            // One thread in all: the schedule, the requests and their connections on the
            // same thread, so starting an iteration wakes no other thread (BENCHMARKS.md).
            builder = tokio::runtime::Builder::new_current_thread();
        } else {
            builder.worker_threads(*n);
        }
    }
    // `up`'s proxy forwards each request between two sockets: on one worker thread its tasks
    // wake each other without crossing threads (no futex, no migration), which is most of its
    // cost on a small machine (BENCHMARKS.md); the controller's own work is light.
    if let Command::Up(_) = &cli.command {
        builder.worker_threads(1);
    }
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Logs go to stderr at `PAYWARDEN_LOG` (an `EnvFilter`, e.g. `debug`); without it, the
/// long-running commands log at info and the one-shot ones (keys, ledger, migrate, the admin
/// clients, review) at warn, so their result is not buried under start-up lines.
fn init_logging(format: LogFormat, long_running: bool) {
    let default = if long_running { "info,sqlx=error" } else { "warn,sqlx=error" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("PAYWARDEN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve(args) => serve(args).await.map(|()| ExitCode::SUCCESS),
        Command::Keys { command: KeysCommand::Create { data_dir, db, merchant } } => {
            require_database(data_dir.as_deref(), &db)?;
            let store = open_any(data_dir.as_deref(), &db, sqlite_options()).await?;
            let (merchant, key, publishable) = create_key(&*store, &merchant).await?;
            println!("{key}");
            eprintln!("created a secret key for merchant {} ({}); it is shown once and stored only as a hash", merchant.name, merchant.id);
            eprintln!("and a publishable key, for a browser (it can only create PaymentMethods and retrieve or confirm a PaymentIntent with its client_secret): {publishable}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Load(args) => load(args).await,
        Command::Up(args) => rollout::up(args).await,
        Command::Judge(args) => rollout::judge(args).await,
        Command::Deploy(args) => rollout::deploy(args).await,
        Command::Rollback(args) => rollout::rollback(args).await,
        Command::Status(args) => rollout::status(args).await,
        Command::History(args) => rollout::history(args).await,
        Command::Review(args) => drill::review(args),
        Command::Drill(args) => drill::drill(args).await,
        Command::Migrate(args) => migrate(args).await,
        Command::Ledger { command: LedgerCommand::Verify { data_dir, db } } => {
            require_database(data_dir.as_deref(), &db)?;
            let store = open_any(data_dir.as_deref(), &db, sqlite_options()).await?;
            let report = store.audit().await.context("reading the ledger")?;
            print!("{report}");
            Ok(if report.balanced() { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
    }
}

/// `paywarden migrate`: the schema step alone, or (`--plan`) what it would do.
async fn migrate(a: MigrateArgs) -> anyhow::Result<ExitCode> {
    check_database_args(&a.db)?;
    let schema = schema_options();
    let place = match (&a.db.database, &a.data_dir) {
        (Some(url), _) => paywarden_store::postgres::redacted(url),
        (None, Some(dir)) => dir.join(paywarden_store::sqlite::DB_FILE).display().to_string(),
        (None, None) => bail!("pass --data-dir (SQLite) or --database (PostgreSQL)"),
    };
    if !a.plan {
        let run = match (&a.db.database, &a.data_dir) {
            (Some(url), _) => PgStore::migrate(url, &PgOptions { pool_max: 1, schema: schema.clone(), ..PgOptions::default() }).await,
            (_, dir) => {
                let dir = dir.as_deref().unwrap_or(Path::new("."));
                std::fs::create_dir_all(dir).with_context(|| format!("creating --data-dir {}", dir.display()))?;
                match SqliteStore::open(dir, sqlite_options()).await {
                    Ok(store) => {
                        let run = store.schema_run().clone();
                        store.close().await;
                        Ok(run)
                    }
                    Err(e) => Err(e),
                }
            }
        }
        .with_context(|| format!("migrating {place}"))?;
        if !a.json {
            let names: Vec<String> = run.applied_now.iter().map(|m| paywarden_store::schema::display_name(m.version, &m.description)).collect();
            println!("{place}: schema up to date{}", if names.is_empty() { String::new() } else { format!("; applied {}", names.join(", ")) });
        }
    }
    // What the database has (now), as this release sees it.
    let plan = match (&a.db.database, &a.data_dir) {
        (Some(url), _) => PgStore::schema_plan(url, &schema).await,
        (_, dir) => SqliteStore::schema_plan(dir.as_deref().unwrap_or(Path::new(".")), &schema).await,
    }
    .with_context(|| format!("reading the schema of {place}"))?;
    let report = schema_report(&plan);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", rollout::schema_text(&report));
    }
    Ok(if report.refused.is_some() { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// The store's plan in the wire format the rollout controller reads.
fn schema_report(plan: &paywarden_store::SchemaPlan) -> paywarden_rollout::schema::SchemaReport {
    use paywarden_rollout::schema::{MigrationKind, SchemaMigration, SchemaReport, REPORT_FORMAT};
    use paywarden_store::schema::{display_name, Kind};
    let kind = |k: Option<Kind>| match k {
        Some(Kind::Expand) => MigrationKind::Expand,
        Some(Kind::Contract) => MigrationKind::Contract,
        None => MigrationKind::Unknown,
    };
    let applied = |a: &paywarden_store::schema::AppliedMigration| SchemaMigration {
        version: a.version,
        name: display_name(a.version, &a.description),
        kind: kind(a.kind),
        release: Some(a.release.clone()),
        applied_unix_ms: Some(a.applied_unix_ms),
    };
    SchemaReport {
        format: REPORT_FORMAT,
        release: plan.release.clone(),
        applied: plan.applied.iter().map(applied).collect(),
        pending: plan
            .pending
            .iter()
            .map(|p| SchemaMigration { version: p.version, name: display_name(p.version, &p.description), kind: kind(Some(p.kind)), release: None, applied_unix_ms: None })
            .collect(),
        unknown: plan.unknown.iter().map(applied).collect(),
        refused: plan.refused.clone(),
    }
}

/// One-shot commands work on an existing database only: a mistyped --data-dir must not make
/// a fresh one (with a key no running server knows). `serve`, `up` and `migrate` create it.
fn require_database(data_dir: Option<&Path>, db: &DatabaseArgs) -> anyhow::Result<()> {
    if let (None, Some(dir)) = (&db.database, data_dir)
        && !dir.join(paywarden_store::sqlite::DB_FILE).exists()
    {
        bail!(
            "no paywarden database in {}; pass the --data-dir that `paywarden serve` or `up` uses (they, and `paywarden migrate`, create it)",
            dir.display()
        );
    }
    Ok(())
}

/// The store `db` names: PostgreSQL with --database, else SQLite in `data_dir`.
async fn open_any(data_dir: Option<&Path>, db: &DatabaseArgs, opts: SqliteOptions) -> anyhow::Result<Arc<dyn Store>> {
    match (&db.database, data_dir) {
        (Some(url), _) => {
            check_database_args(db)?;
            let pg = PgOptions { pool_max: db.pool_max, writes_max: opts.writer_queue_max, schema: opts.schema.clone(), ..PgOptions::default() };
            let store = PgStore::open(url, pg).await.with_context(|| format!("opening the database {}", paywarden_store::postgres::redacted(url)))?;
            Ok(Arc::new(store))
        }
        (None, Some(dir)) => {
            let store = SqliteStore::open(dir, opts).await.with_context(|| format!("opening the store in {}", dir.display()))?;
            Ok(Arc::new(store))
        }
        (None, None) => bail!("pass --data-dir (SQLite) or --database (PostgreSQL)"),
    }
}

/// Most connections `--pool-max` may ask for.
const POOL_MAX: u32 = 1000;

/// The database flags, before anything is opened.
fn check_database_args(db: &DatabaseArgs) -> anyhow::Result<()> {
    if let Some(url) = &db.database {
        check_database_url(url)?;
    }
    if db.pool_max == 0 || db.pool_max > POOL_MAX {
        bail!("--pool-max must be 1 to {POOL_MAX}");
    }
    Ok(())
}

pub(crate) fn check_database_url(url: &str) -> anyhow::Result<()> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        bail!("--database must be a postgres:// URL (e.g. postgres://paywarden@127.0.0.1:5432/paywarden); leave it out for SQLite in --data-dir");
    }
    Ok(())
}

/// Merchant names are shown to operators; keep them short and printable.
const MERCHANT_NAME_CHARS_MAX: usize = 100;

/// A new secret key and a new publishable key for merchant `name` (made if missing).
async fn create_key(store: &dyn Store, name: &str) -> anyhow::Result<(Merchant, String, String)> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MERCHANT_NAME_CHARS_MAX || name.chars().any(char::is_control) {
        bail!("--merchant must be 1 to {MERCHANT_NAME_CHARS_MAX} printable characters");
    }
    let mut batch = WriteBatch::new();
    let merchant = match store.merchant_by_name(name).await? {
        Some(m) => m,
        None => {
            let m = Merchant { id: new_id("acct"), name: name.to_string(), created: now() };
            batch.push(Write::Merchant(m.clone()));
            m
        }
    };
    let (key, publishable) = (new_secret_key(), new_publishable_key());
    for k in [&key, &publishable] {
        batch.push(Write::ApiKey(ApiKeyRecord { hash: hash_key(k), merchant: merchant.id.clone(), prefix: k.chars().take(12).collect(), created: now() }));
    }
    store.write(batch).await.context("storing the key")?;
    Ok((merchant, key, publishable))
}

/// The key that makes card fingerprints: 32 random bytes, made once per data dir, mode 0600.
fn fingerprint_key(data_dir: &Path) -> anyhow::Result<[u8; 32]> {
    key_file(&data_dir.join("fingerprint.key"))
}

/// 32 random bytes in `path`, made at first use with mode 0600. Instances that start together
/// on one data dir (under `up`) agree on one key: it is written whole to a temporary file and
/// linked into place, which fails if another got there first, and then that one is read.
fn key_file(path: &Path) -> anyhow::Result<[u8; 32]> {
    let read = |p: &Path| -> anyhow::Result<[u8; 32]> {
        let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
        bytes.try_into().map_err(|_| anyhow::anyhow!("{} is not 32 bytes; restore it from backup", p.display()))
    };
    if path.exists() {
        return read(path);
    }
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(&key)?;
        f.sync_all()?;
    }
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(key),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read(path),
        Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    // Flags first: a refused command line writes nothing (not even the data dir).
    if args.memory_sample_interval.is_zero() {
        bail!("--memory-sample-interval must be above zero, e.g. 1s");
    }
    if args.admin_token.as_deref().is_some_and(|t| t.len() < 16) {
        bail!("--admin-token must be at least 16 characters");
    }
    if args.webhook_concurrency == 0 || args.webhook_concurrency > WEBHOOK_CONCURRENCY_MAX {
        bail!("--webhook-concurrency must be 1 to {WEBHOOK_CONCURRENCY_MAX}");
    }
    for (name, d) in [("--webhook-backoff-base", args.webhook_backoff_base), ("--webhook-timeout", args.webhook_timeout)] {
        if d.is_zero() || d > Duration::from_secs(3600) {
            bail!("{name} must be above zero and at most 1h");
        }
    }
    if args.webhook_retry_horizon < args.webhook_backoff_base {
        bail!("--webhook-retry-horizon must be at least --webhook-backoff-base");
    }
    if !(1..=REQUESTS_IN_FLIGHT_MAX).contains(&args.requests_in_flight_max) {
        bail!("--requests-in-flight-max must be 1 to {REQUESTS_IN_FLIGHT_MAX}");
    }
    if !(1..=listen::CONNECTIONS_MAX).contains(&args.connections_max) {
        bail!("--connections-max must be 1 to {}", listen::CONNECTIONS_MAX);
    }
    if !(Duration::from_secs(1)..=listen::HEADER_READ_TIMEOUT_MAX).contains(&args.header_read_timeout) {
        bail!("--header-read-timeout must be 1s to 1h");
    }
    check_database_args(&args.db)?;
    // The certificate and key are read (and paired) before anything is written.
    let tls = args.tls.config()?;
    let opts = SqliteOptions { writer_queue_max: args.writer_queue_max, ..sqlite_options() };
    // Bind before anything is written: a port in use must not leave a database whose first
    // key was never shown.
    let listener = tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
    std::fs::create_dir_all(&args.data_dir).with_context(|| format!("creating --data-dir {}", args.data_dir.display()))?;
    // One server per SQLite data dir; `up`'s instances (which have a supervisor) share its.
    let _lock = if args.db.database.is_none() && std::env::var_os("PAYWARDEN_SUPERVISOR_PID").is_none() {
        Some(datadir::lock(&args.data_dir, "paywarden serve")?)
    } else {
        None
    };
    let store = open_any(Some(&args.data_dir), &args.db, opts).await?;
    let key = fingerprint_key(&args.data_dir)?;
    let mut first_key = None;
    if store.merchants_count().await? == 0 {
        match create_key(&*store, "default").await {
            Ok((_, k, pk)) => first_key = Some((k, pk)),
            // Another replica on the same database made it first.
            Err(e) if store.merchant_by_name("default").await?.is_some() => {
                tracing::info!(error = %format!("{e:#}"), "merchant 'default' was created by another replica");
            }
            Err(e) => return Err(e),
        }
    }
    let acquirer = SandboxAcquirer::new(SandboxConfig { latency: args.acquirer_latency, fingerprint_key: key });
    for f in &args.faults {
        tracing::warn!(fault = %f, "FAULT INJECTION ACTIVE: this instance misbehaves on purpose");
    }
    // Webhook signing secrets derive from this key; losing it changes every endpoint's secret.
    let webhook_key = key_file(&args.data_dir.join("webhook.key"))?;
    let cfg = ApiConfig {
        body_bytes_max: args.body_bytes_max,
        requests_in_flight_max: args.requests_in_flight_max,
        faults: args.faults.clone(),
        memory_metrics: args.memory_guard == Switch::On,
        admin_token: args.admin_token.clone(),
        webhook_key,
        ..ApiConfig::default()
    };
    let ttl = cfg.idempotency_ttl_s;
    let app = App::new(store.clone(), Arc::new(acquirer), cfg);
    paywarden_api::webhooks::spawn_delivery(
        app.clone(),
        webhook_key,
        paywarden_api::webhooks::WebhookConfig {
            concurrency: args.webhook_concurrency,
            timeout: args.webhook_timeout,
            backoff_base: args.webhook_backoff_base,
            retry_horizon: args.webhook_retry_horizon,
            disable_after: args.webhook_retry_horizon,
            ..Default::default()
        },
    );
    let addr = listener.local_addr()?;
    let guard = guard::GuardOptions {
        limit: args.memory_limit,
        interval: args.memory_sample_interval,
        webhook: args.alert_webhook.clone(),
        instance: addr.to_string(),
    };
    if args.memory_guard == Switch::On {
        guard::start(&app, guard).await?;
    } else {
        tracing::warn!("memory guard off: no leak detection, no alerts");
    }

    let purge_store = store.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            match purge_store.purge_idempotency(now() - ttl).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(purged = n, "expired idempotency keys purged"),
                Err(e) => tracing::warn!(error = %e, "idempotency purge failed"),
            }
        }
    });

    let database = args.db.database.as_deref().map_or_else(|| "sqlite".to_string(), paywarden_store::postgres::redacted);
    tracing::info!(%addr, data_dir = %args.data_dir.display(), %database, acquirer = "sandbox", "paywarden serving");
    println!("paywarden listening on {}://{addr}", if tls.is_some() { "https" } else { "http" });
    for f in &args.faults {
        println!("fault injected: {f}");
    }
    if let Some((k, pk)) = first_key {
        println!("test secret key for merchant 'default' (shown once): {k}");
        println!("test publishable key for merchant 'default' (for a browser, not a secret; printed this once): {pk}");
    }
    let _ = std::io::stdout().flush();
    let supervisor = std::env::var("PAYWARDEN_SUPERVISOR_PID").ok().and_then(|p| p.parse::<u32>().ok());
    let stop = async move {
        tokio::select! {
            () = shutdown_signal() => {}
            () = supervisor_gone(supervisor) => {
                tracing::warn!("the supervising `paywarden up` is gone; shutting down");
            }
        }
    };
    listen::serve(listener, paywarden_api::router(app), tls, args.connections_max, args.header_read_timeout, stop).await?;
    tracing::info!("paywarden stopped");
    Ok(())
}

/// Largest `serve --requests-in-flight-max`.
const REQUESTS_IN_FLIGHT_MAX: usize = 100_000;

/// Default rate and duration of `load` when neither the command line nor a file sets them.
const LOAD_RATE_DEFAULT: f64 = 50.0;
const LOAD_DURATION_DEFAULT: Duration = Duration::from_secs(30);
/// Most worker threads `load --threads` accepts.
const LOAD_THREADS_MAX: usize = 256;

async fn load(a: LoadArgs) -> anyhow::Result<ExitCode> {
    use paywarden_load::scenario::{builtin, from_toml};
    use paywarden_load::schedule::Executor;
    let rate = a.rate.unwrap_or(LOAD_RATE_DEFAULT);
    let duration = a.duration.unwrap_or(LOAD_DURATION_DEFAULT);
    let mut scenario = match builtin(&a.scenario, rate, duration) {
        Some(s) => s,
        None => {
            let path = Path::new(&a.scenario);
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--scenario {}: not `payments` or `noop`, and not a readable TOML file", a.scenario))?;
            let mut s = from_toml(&text, &a.scenario).map_err(|e| anyhow::anyhow!("{e}"))?;
            s.executor = match (a.rate, a.duration, s.executor) {
                // --rate makes it a constant arrival rate, for --duration or the file's length.
                (Some(r), d, e) => Executor::ConstantArrivalRate { rate: r, duration: d.unwrap_or_else(|| e.duration()) },
                (None, Some(d), Executor::ConstantArrivalRate { rate, .. }) => Executor::ConstantArrivalRate { rate, duration: d },
                (None, Some(d), Executor::ConstantVus { vus, .. }) => Executor::ConstantVus { vus, duration: d },
                (None, Some(_), Executor::RampingArrivalRate { .. }) => {
                    bail!("--duration cannot change a ramping-arrival-rate scenario's length: edit its stages in {}", a.scenario)
                }
                (None, None, e) => e,
            };
            s
        }
    };
    for t in &a.thresholds {
        scenario.thresholds.push(t.parse().map_err(|e| anyhow::anyhow!("--threshold {t}: {e}"))?);
    }
    if let Some(m) = a.max_in_flight {
        if m == 0 || m > paywarden_load::scenario::MAX_IN_FLIGHT_MAX {
            bail!("--max-in-flight must be 1 to {}", paywarden_load::scenario::MAX_IN_FLIGHT_MAX);
        }
        scenario.max_in_flight = m;
    }
    scenario.executor.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(dir) = &a.out {
        std::fs::create_dir_all(dir).with_context(|| format!("creating --out {}", dir.display()))?;
    }
    eprintln!("paywarden load: {} ({}) against {}", scenario.name, scenario.executor.describe(), a.target);
    let cfg = paywarden_load::LoadConfig {
        target: a.target.clone(),
        key: a.key.clone(),
        scenario,
        timeout: a.timeout,
        connections: a.connections,
        sample_memory: !a.no_memory,
        progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        stop: None,
    };
    let summary = paywarden_load::run(cfg).await?;
    print!("{}", summary.text());
    if let Some(dir) = &a.out {
        std::fs::write(dir.join("summary.json"), serde_json::to_vec_pretty(&summary)?)?;
        std::fs::write(dir.join("report.html"), paywarden_load::report::html(&summary))?;
        println!("wrote {} and {}", dir.join("summary.json").display(), dir.join("report.html").display());
    }
    Ok(if summary.passed { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// Resolves when the process that started this instance (`PAYWARDEN_SUPERVISOR_PID`, set by
/// `paywarden up`) is no longer its parent: a controller killed with `kill -9` leaves no orphan
/// instances behind. Never resolves without a supervisor.
async fn supervisor_gone(pid: Option<u32>) {
    let Some(pid) = pid else { return std::future::pending().await };
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        if std::os::unix::process::parent_id() != pid {
            return;
        }
    }
}

pub(crate) async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = ctrl_c.await;
            return;
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term.recv() => {},
    }
}
