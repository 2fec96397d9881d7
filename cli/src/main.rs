//! The `sandstorm` command: thin argument parsing over the library crates.

use std::io::IsTerminal as _;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod agent;
mod bench;
mod dev;
mod launch;
mod register;
mod scheduler;
mod sim;
mod telemetry;

/// Sandstorm: a serverless platform whose scheduler knows what isolation and data movement cost.
#[derive(Debug, Parser)]
#[command(name = "sandstorm", version, propagate_version = true)]
struct Cli {
    /// Log format on stderr: `text` for people, `json` (one object per line) for log pipelines.
    /// The level comes from `RUST_LOG` (default `warn`).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    Dev(dev::DevArgs),
    Sim(sim::SimArgs),
    Agent(agent::AgentArgs),
    /// (internal) the compute node's zygote; started by the agent.
    #[command(name = "__zygote", hide = true)]
    Zygote,
    /// (internal) holds a root file system part; started by the agent.
    #[command(name = "__holder", hide = true)]
    Holder {
        base: std::path::PathBuf,
    },
    Bench(bench::BenchArgs),
    #[command(flatten)]
    Scheduler(scheduler::SchedulerCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Json => logs.json().init(),
        // Colours only for a person at a terminal: piped logs stay plain text.
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
    }
    let result = match cli.command {
        Command::Dev(args) => dev::run(&args),
        Command::Sim(args) => sim::run(&args),
        Command::Agent(args) => agent::run(&args),
        Command::Zygote => sandstorm_node_agent::compute::zygote::zygote_main().map_err(Into::into),
        Command::Holder { base } => {
            sandstorm_node_agent::compute::zygote::holder_main(&base).map_err(Into::into)
        }
        Command::Bench(args) => bench::run(&args),
        Command::Scheduler(command) => scheduler::run(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
