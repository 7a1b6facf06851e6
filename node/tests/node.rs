//! The `goop` binary, run as a user would run it.

#[path = "node/executor_cmd.rs"]
mod executor_cmd;
