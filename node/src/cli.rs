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
    /// Submit, list, show, cancel, retry and watch jobs on a cluster host.
    Job {
        /// Where the host's API is.
        #[command(flatten)]
        api: crate::cmd_job::ApiArgs,
        /// What to do.
        #[command(subcommand)]
        command: crate::cmd_job::JobCommand,
    },
    /// Create a cluster on a node and look at it.
    Cluster {
        /// Where the node's API is.
        #[command(flatten)]
        api: crate::cmd_job::ApiArgs,
        /// What to do.
        #[command(subcommand)]
        command: crate::cmd_job::ClusterCommand,
    },
    /// Run a peer: the libp2p node, the MQ bus and the local HTTP API.
    Node(crate::cmd_node::NodeArgs),
    /// Run a peer that joins a cluster as a worker and runs its jobs through an executor.
    Worker(crate::cmd_node::WorkerArgs),
    /// Try an executor binary locally: run its check, or run jobs through it.
    Executor(crate::cmd_executor::ExecutorArgs),
    // The help of `goop demo` is the doc of `DemoArgs`.
    Demo(crate::cmd_demo::DemoArgs),
}

/// Runs the parsed command line and returns the process exit status.
pub fn run(cli: Cli) -> ExitCode {
    crate::logging::init();
    match cli.command {
        Command::Version => {
            println!("goop {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Job { api, command } => crate::cmd_job::run_job(&api, command),
        Command::Cluster { api, command } => crate::cmd_job::run_cluster(&api, command),
        Command::Node(args) => crate::cmd_node::run(&args),
        Command::Worker(args) => crate::cmd_node::run_worker(&args),
        Command::Executor(args) => crate::cmd_executor::run(args),
        Command::Demo(args) => crate::cmd_demo::run(&args),
    }
}
