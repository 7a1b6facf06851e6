//! Write goop executors in Rust: turn a handler into a correct executor for both the oneshot and
//! the daemon mode of the goop executor protocol.

#![deny(missing_docs)]
