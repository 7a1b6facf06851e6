//! The `goop` program: the command line, the HTTP API, and the wiring of a peer's parts.

pub mod cli;
mod cmd_executor;
mod logging;

pub use cli::run;
