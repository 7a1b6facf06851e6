//! Example executors for goop, written against the executor SDK. The binaries live in
//! `src/bin/`; the Python and Bash executors beside them speak the protocol by hand.
//!
//! The library holds the real work of `goop-example-executor`, so it can be unit-tested:
//! - [`calc`]: arithmetic expressions for the `calculate` job type;
//! - [`transform`]: text and table conversions for the `transform` job type.

pub mod calc;
pub mod transform;
