//! The worker runtime against real executor processes: the fixtures in `tests/fixtures/` are
//! small bash and python3 executors, well-behaved and not.

#[path = "worker/check.rs"]
mod check;
#[path = "worker/daemon.rs"]
mod daemon;
#[path = "worker/oneshot.rs"]
mod oneshot;
#[path = "worker/support.rs"]
mod support;
