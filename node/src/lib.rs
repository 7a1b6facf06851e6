//! The `goop` program: the command line, the HTTP API, and the wiring of a peer's parts.

pub mod cli;
pub mod client;
mod cluster;
mod cmd_demo;
mod cmd_executor;
mod cmd_graphql;
mod cmd_job;
pub mod cmd_node;
mod federation;
mod http;
mod logging;
pub mod node_config;
pub mod peer;

pub use cli::run;
