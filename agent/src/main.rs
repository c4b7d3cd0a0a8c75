//! `llmtrace`: the command line of the host agent.
#![forbid(unsafe_code)]

use std::{path::PathBuf, process::ExitCode};

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use llmtrace_agent::{
    admin::{client, status::StatusReport},
    app, cli, config,
};
use tracing_subscriber::{EnvFilter, Layer, Registry, filter::LevelFilter, prelude::*};

/// mimalloc instead of glibc malloc: the data path allocates and frees small buffers per
/// exchange on several threads (hyper, rustls, captures, rows), where glibc's arenas spent
/// ~10% of the agent's CPU (`cargo xtask bench proxy`: -10% CPU per request for JSON, -20%
/// for SSE) at the price of a larger resident set (about +30 MiB under load).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Transparent interception of LLM API traffic on this host.
#[derive(Debug, Parser)]
#[command(name = "llmtrace", version, about)]
struct Cli {
    /// Configuration file (TOML). Default: /etc/llmtrace/config.toml if it exists, else
    /// built-in defaults.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the agent in the foreground (Ctrl-C or SIGTERM detach everything and exit).
    Run,
    /// Show what the running agent is doing: hook, providers, recent connections.
    Status {
        /// Print the raw JSON report.
        #[arg(long)]
        json: bool,
    },
    /// Check the configuration and print it with every default filled in.
    Config,
    /// Manage the local root CA (create, show, install in the trust store, rotate).
    #[command(subcommand)]
    Ca(cli::ca::CaCommand),
    /// Run the detectors offline on text or JSON lines (`{"text": …}`), one JSON result per line.
    Analyze(cli::analyze::AnalyzeArgs),
    /// Follow completed traces live from the running agent.
    Tail(cli::tail::TailArgs),
    /// ClickHouse schema: create or upgrade it, check the connection.
    #[command(subcommand)]
    Clickhouse(cli::clickhouse::ClickHouseCmd),
    /// Run a saved fleet question against ClickHouse (`--list` shows them).
    Report(cli::report::ReportArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("llmtrace: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let (config, file) = config::load(cli.config.as_deref())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match cli.command {
        Command::Run => runtime.block_on(app::run(config, file)),
        Command::Status { json } => runtime.block_on(status(&config, json)),
        Command::Ca(cmd) => {
            let hosts: Vec<String> = config::effective_providers(&config)
                .into_iter()
                .map(|p| p.host)
                .collect();
            cli::ca::run(&cmd, &config.ca_dir(), &hosts, config.ca.name_constraints)
        }
        Command::Analyze(args) => cli::analyze::run(&args, &config.llm.analysis),
        Command::Tail(args) => runtime.block_on(cli::tail::run(&args, &config.admin_socket())),
        Command::Clickhouse(cmd) => runtime.block_on(cli::clickhouse::run(cmd, &config.sink)),
        Command::Report(args) => runtime.block_on(cli::report::run(&args, &config.sink)),
        Command::Config => {
            print!("{}", toml::to_string_pretty(&config)?);
            Ok(())
        }
    }
}

async fn status(config: &config::Config, json: bool) -> Result<()> {
    let body = client::get(&config.admin_socket(), "/status").await?;
    if json {
        println!("{}", String::from_utf8_lossy(&body));
        return Ok(());
    }
    let report: StatusReport =
        serde_json::from_slice(&body).context("decoding the status report")?;
    print!("{}", render(&report));
    Ok(())
}

fn render(r: &StatusReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let k = &r.kernel;
    let _ = writeln!(out, "llmtrace {} (pid {})", r.version, r.pid);
    let _ = writeln!(out, "cgroup:     {}", k.cgroup);
    let _ = writeln!(
        out,
        "fail mode:  {}{}",
        k.fail_mode,
        k.pin_dir
            .as_ref()
            .map(|p| format!(" (pinned in {p})"))
            .unwrap_or_default()
    );
    let _ = writeln!(out, "listening:  {}", k.listen.join(", "));
    let _ = writeln!(
        out,
        "kernel:     {} provider routes, {} tracked connections",
        k.provider_entries, k.tracked_connections
    );
    let counters: Vec<String> = k.counters.iter().map(|(n, v)| format!("{n}={v}")).collect();
    let _ = writeln!(out, "counters:   {}", counters.join(" "));
    let _ = writeln!(out, "\nproviders:");
    for p in &r.providers {
        let addrs = if p.addresses.is_empty() {
            "-".to_owned()
        } else {
            p.addresses.join(", ")
        };
        let err = p
            .error
            .as_ref()
            .map(|e| format!("  (last error: {e})"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {:<14} {}:{}  [{}] {}{}",
            p.name, p.host, p.port, p.source, addrs, err
        );
    }
    let _ = writeln!(out, "\nrecent connections:");
    for c in &r.recent_connections {
        let state = if c.closed {
            format!("closed up={} down={}", c.bytes_up, c.bytes_down)
        } else {
            "open".to_owned()
        };
        let exe = c.process.exe.as_deref().unwrap_or("?");
        let _ = writeln!(
            out,
            "  #{:<6} pid {:<7} {:<15} uid {:<6} {} -> {}  {}  {}",
            c.id, c.pid, c.comm, c.uid, c.client, c.orig_dst, exe, state
        );
    }
    out
}

/// Logs to stderr, filtered by `LLMTRACE_LOG` (default `info`), as text or, with
/// `LLMTRACE_LOG_FORMAT=json`, one JSON object per line (for log collectors).
fn init_logging() {
    let spec = std::env::var("LLMTRACE_LOG").unwrap_or_default();
    // A plain level is a static filter. `EnvFilter` takes a lock on every span enter and
    // exit (it tracks span-scoped directives), and every connection and exchange is a span
    // entered on each poll: only directives need it.
    let filter: Box<dyn Layer<Registry> + Send + Sync> = if spec.trim().is_empty() {
        LevelFilter::INFO.boxed()
    } else if let Ok(level) = spec.trim().parse::<LevelFilter>() {
        level.boxed()
    } else {
        EnvFilter::try_new(&spec)
            .unwrap_or_else(|_| EnvFilter::new("info"))
            .boxed()
    };
    let format = std::env::var("LLMTRACE_LOG_FORMAT").unwrap_or_default();
    // Colours only on a terminal: a journal or a log file would keep the escape codes.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let text = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let fmt = if format == "json" {
        text.json().boxed()
    } else {
        text.boxed()
    };
    tracing_subscriber::registry().with(filter).with(fmt).init();
    if !matches!(format.as_str(), "" | "text" | "json") {
        tracing::error!(
            value = format,
            "LLMTRACE_LOG_FORMAT must be \"text\" or \"json\"; logging as text"
        );
    }
}
