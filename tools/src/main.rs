//! `vvram`: check and explain policies, start programs under libvvram.so, inspect
//! devices and live statistics, run the demo.
//!
//! Exit codes: 0 success; 1 runtime failure (no driver, process not found, a check
//! failed); 2 invalid policy or arguments; `vvram run` exits with its command's code.

mod check;
mod demo;
mod devices;
mod explain;
mod load;
mod locate;
mod run;
mod stats;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// vvram gives an unmodified CUDA application more VRAM than the card has.
#[derive(Parser)]
#[command(name = "vvram", version, about, long_about = None, after_help = "Start here: `vvram demo`, then `vvram devices` and `vvram explain POLICY`.\nExit codes: 0 success; 1 runtime failure; 2 invalid policy or arguments; run: the command's own.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Check(check::CheckArgs),
    Explain(explain::ExplainArgs),
    Run(run::RunArgs),
    Devices(devices::DevicesArgs),
    Stats(stats::StatsArgs),
    Demo(demo::DemoArgs),
    /// The demo's workload, run by `vvram demo` under libvvram.so.
    #[command(hide = true)]
    DemoWorkload {
        /// Before freeing, print `stats: JSON` and wait until standard input closes.
        #[arg(long)]
        hold: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check(args) => check::run(&args),
        Command::Explain(args) => explain::run(&args),
        Command::Run(args) => run::run(&args),
        Command::Devices(args) => devices::run(&args),
        Command::Stats(args) => stats::run(&args),
        Command::Demo(args) => demo::run(&args),
        Command::DemoWorkload { hold } => demo::workload(hold),
    }
}
