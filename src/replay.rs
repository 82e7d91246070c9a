//! `uniplay replay`.

use std::io::{IsTerminal as _, Write as _};
use std::sync::atomic::{AtomicUsize, Ordering};

use replay::{EpochReport, ReplayError, ReplayOptions, Report, Status};

use crate::{cli::ReplayArgs, exit};

pub fn run(args: ReplayArgs) -> i32 {
    let jobs = args.jobs.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let opts = ReplayOptions {
        jobs,
        epoch: args.epoch,
    };
    let show = !args.quiet && std::io::stderr().is_terminal();
    let done = AtomicUsize::new(0);
    let verified = AtomicUsize::new(0);
    let diverged = AtomicUsize::new(0);
    let progress = |r: &EpochReport| {
        done.fetch_add(1, Ordering::Relaxed);
        match r.status {
            Status::Verified => verified.fetch_add(1, Ordering::Relaxed),
            _ => diverged.fetch_add(1, Ordering::Relaxed),
        };
        if show {
            let mut e = std::io::stderr().lock();
            let _ = write!(
                e,
                "\r\x1b[K[uniplay] replay: {} epochs done, {} verified, {} diverged or skipped",
                done.load(Ordering::Relaxed),
                verified.load(Ordering::Relaxed),
                diverged.load(Ordering::Relaxed)
            );
            let _ = e.flush();
        }
    };
    let report = match replay::replay(&args.trace, &opts, &progress) {
        Ok(r) => r,
        Err(e) => {
            exit::report(&e);
            return match e {
                ReplayError::Open { .. }
                | ReplayError::NoCheckpoints { .. }
                | ReplayError::NoSuchEpoch { .. } => exit::BAD_INPUT,
                _ => exit::FAILURE,
            };
        }
    };
    if show {
        eprint!("\r\x1b[K");
    }
    if args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(j) => println!("{j}"),
            Err(e) => {
                exit::report(&e);
                return exit::FAILURE;
            }
        }
    } else {
        print_report(&report);
    }
    if report.ok() {
        0
    } else {
        exit::DIVERGED
    }
}

fn print_report(r: &Report) {
    // A closed pipe (| head) is not an error worth a panic.
    let _ = write_report(&mut std::io::stdout().lock(), r);
}

fn write_report(out: &mut impl std::io::Write, r: &Report) -> std::io::Result<()> {
    writeln!(
        out,
        "epoch  status     events  procs  threads  time s  details"
    )?;
    for e in &r.epochs {
        let status = match e.status {
            Status::Verified => "verified",
            Status::Diverged => "DIVERGED",
            Status::Skipped => "skipped",
        };
        let mut details: Vec<String> = e.reason.iter().cloned().collect();
        let execs = e.processes.iter().filter(|p| p.ended_at_exec).count();
        if execs > 0 {
            details.push(format!(
                "{execs} exec'd (replayed from the next checkpoint on)"
            ));
        }
        for p in &e.processes {
            details.extend(p.notes.iter().map(|n| format!("process {}: {n}", p.pid)));
        }
        writeln!(
            out,
            "{:>5}  {:<9} {:>7}  {:>5}  {:>7}  {:>6.3}  {}",
            e.index,
            status,
            e.events,
            e.processes.len(),
            e.threads,
            e.elapsed_ns as f64 / 1e9,
            details.join("; ")
        )?;
        if let Some(d) = &e.first_divergence {
            writeln!(
                out,
                "       first divergence: event {} thread {}: expected {}, got {}",
                d.seq.map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
                d.tid,
                d.expected,
                d.actual
            )?;
        }
    }
    writeln!(
        out,
        "{} epochs: {} verified, {} diverged, {} skipped; outputs {}; exit status {}; {} jobs, {:.3} s",
        r.epochs.len(),
        r.verified,
        r.diverged,
        r.skipped,
        if r.outputs_match { "match" } else { "DIFFER" },
        match r.exit_status_match {
            Some(true) => "matches",
            Some(false) => "DIFFERS",
            None => "not replayed",
        },
        r.jobs,
        r.elapsed_ns as f64 / 1e9
    )
}
