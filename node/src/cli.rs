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
    /// Run a GraphQL query or mutation on a node and print the answer as JSON.
    ///
    /// The node serves its own tables in context, and the tables of the data federations it
    /// is in, merged from every peer that offers them. Exit status 0 when the answer has no
    /// errors, 1 when it has some (a peer that did not answer, a bad field; `data` holds what
    /// was answered), 2 when the request could not be made.
    ///
    /// Example: goop graphql '{ notes(order_by: {stars: desc}, limit: 5) { slug stars _owner } }'
    Graphql {
        /// Where the node's API is.
        #[command(flatten)]
        api: crate::cmd_job::ApiArgs,
        /// The request.
        #[command(flatten)]
        args: crate::cmd_graphql::GraphqlArgs,
    },
    /// Run a peer: the libp2p node, the MQ bus and the local HTTP API.
    Node(crate::cmd_node::NodeArgs),
    /// Run a peer that joins a cluster as a worker and runs its jobs through an executor.
    ///
    /// A host not reachable yet is waited for (the join keeps trying, and the log says so); a
    /// host that refuses this peer for good (not invited, removed by the host, no such group)
    /// stops the command with its reason. Restarted with the same `--data-dir`, the worker
    /// comes back to its cluster by itself.
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
        Command::Graphql { api, args } => crate::cmd_graphql::run(&api, args),
        Command::Node(args) => crate::cmd_node::run(&args),
        Command::Worker(args) => crate::cmd_node::run_worker(&args),
        Command::Executor(args) => crate::cmd_executor::run(args),
        Command::Demo(args) => crate::cmd_demo::run(&args),
    }
}
