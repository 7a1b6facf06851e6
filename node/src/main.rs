//! The `goop` binary: parses the command line and hands over to the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = node::cli::Cli::parse();
    node::run(cli)
}
