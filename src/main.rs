//! `uniplay`: record a Linux process tree with eBPF, look inside the trace.
//!
//! Exit codes (also in `uniplay --help`):
//! - `record -- CMD`: the command's own status (128+N if killed by signal N;
//!   127 if CMD is not found, 126 if it is not executable);
//! - 0 success; 1 an unexpected failure; 2 bad usage;
//! - 3 the recording lost events (see `--allow-loss`);
//! - 4 the machine cannot record (permissions, kernel features);
//! - 5 bad input (no such process, output exists, damaged or foreign trace);
//! - 6 `replay`: an epoch diverged or was skipped, or outputs or exit status differ.

mod cli;
mod exit;
mod inspect;
mod record;
mod replay;

use clap::Parser as _;

fn main() {
    let cli = cli::Cli::parse();
    let code = match cli.command {
        cli::Command::Record(args) => record::run(args),
        cli::Command::Inspect(args) => inspect::run(args),
        cli::Command::Replay(args) => replay::run(args),
    };
    std::process::exit(code);
}
