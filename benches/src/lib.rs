//! Shared pieces of the goop benchmarks: workload generators and reporting helpers.
