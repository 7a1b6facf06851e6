//! The job dispatcher: a pure, deterministic state machine that owns the job queue and decides
//! which worker runs which job.
//!
//! It does no I/O, reads no clock and draws no randomness except from a seed: the shell feeds it
//! inputs with the current time through `step`, and carries out the outputs it returns.
