//! The worker runtime: runs jobs through a user's executor binary, oneshot or daemon, over
//! newline-delimited JSON on stdin/stdout, and supervises the processes.
