//! Placeholder; replaced by the SDK echo executor.
fn main() {}
