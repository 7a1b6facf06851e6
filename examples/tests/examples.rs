//! The example executors as real processes over real pipes: the Rust SDK executors (built by
//! cargo for this test), the Python executor and the Bash executor, in oneshot style (one line,
//! then end of input) and daemon style (the check, many concurrent jobs, cancels, end of input).

mod examples {
    pub(crate) mod bash;
    pub(crate) mod calculate;
    pub(crate) mod check;
    pub(crate) mod daemon;
    pub(crate) mod harness;
    pub(crate) mod numbers;
    pub(crate) mod python;
    pub(crate) mod transform;
}
