//! The `goop` program: the command line, the HTTP API, and the wiring of a peer's parts.

pub mod cli;
pub mod client;
mod cmd_job;
mod logging;

pub use cli::run;
