//! The command line: one subcommand a module, each with its own `--help`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// goop: a peer-to-peer compute framework. A peer creates a cluster group and becomes its host;
/// other peers join as workers and run jobs through an executor binary.
#[derive(Debug, Parser)]
#[command(name = "goop", version, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the version of this build.
    Version,
    /// Try an executor binary locally: run its check, or run jobs through it.
    Executor(crate::cmd_executor::ExecutorArgs),
}

/// Runs the parsed command line and returns the process exit status.
pub fn run(cli: Cli) -> ExitCode {
    crate::logging::init();
    match cli.command {
        Command::Version => {
            println!("goop {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Executor(args) => crate::cmd_executor::run(args),
    }
}
