//! `vvram`: check, explain and (later) launch workloads under libvvram.so.
//!
//! Exit codes: 0 success; 1 runtime failure (an I/O error, no driver); 2 invalid policy
//! or invalid arguments.

mod check;
mod explain;
mod load;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// vvram gives an unmodified CUDA application more VRAM than the card has.
#[derive(Parser)]
#[command(name = "vvram", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Check(check::CheckArgs),
    Explain(explain::ExplainArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check(args) => check::run(&args),
        Command::Explain(args) => explain::run(&args),
    }
}
