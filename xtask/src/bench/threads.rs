//! `cargo xtask bench threads`: how often the serial replay verifies the
//! epochs of real multithreaded programs, and why the others diverge,
//! with the order of libc's lock operations recorded (the default) and
//! without (`record --no-sync-order`).
//!
//! Threads that hand data over in user code (an uncontended lock, an
//! atomic flag) leave no syscall in the log; the serial run can order that
//! code differently from the recording (README, Limitations). The sync
//! probes record the lock calls' order; this measures how often the rest
//! bites, on programs nobody here wrote, and what the probes cost.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use anyhow::Result;

use super::checkpoint::{load_average, record_argv};
use super::replay::replay_json;
use super::{argv, bench_dir, invocation, machine, shell_join, time_run, uniplay, workload};

/// Why an epoch did not verify, from its report.
#[derive(Default, Clone)]
struct Tally {
    epochs: u64,
    verified: u64,
    skipped: u64,
    /// First divergence at a futex call or a recorded lock call
    /// (synchronisation order).
    futex: u64,
    /// A thread cut in a loop the replay could not reach.
    not_reached: u64,
    /// Every call matched, but memory or registers differ at the cut.
    state: u64,
    other: u64,
    noops_added: u64,
    noops_dropped: u64,
    /// Recording wall times, seconds.
    record_s: Vec<f64>,
}

pub fn run(recordings: usize) -> Result<()> {
    let dir = bench_dir();
    fs::create_dir_all(&dir)?;
    let text = dir.join("threads-input.txt");
    let nums = dir.join("threads-numbers.txt");
    let script = crate::root().join("tests/workloads/handover.py");
    write_inputs(&text, &nums)?;
    let (text, nums, script) = (
        shell_join(&[text.display().to_string()]),
        shell_join(&[nums.display().to_string()]),
        shell_join(&[script.display().to_string()]),
    );
    let toy = workload("threads")?.display().to_string();
    let mild = workload("mild_threads")?.display().to_string();
    let programs: Vec<(&str, &str, Vec<String>)> = vec![
        (
            "zstd, 2 worker threads",
            "100ms",
            argv(&["zstd", "-T2", "-6", "-c", "-q", &text]),
        ),
        (
            "xz, 2 worker threads",
            "100ms",
            argv(&["xz", "-T2", "--block-size=500KiB", "-c", &text]),
        ),
        (
            "sort, 2 threads",
            "100ms",
            argv(&["sort", "--parallel=2", "-S", "10M", &nums]),
        ),
        (
            "python3, 3 threads and queues",
            "100ms",
            argv(&["/usr/bin/python3", &script]),
        ),
        ("tests/workloads/mild_threads.c", "40ms", argv(&[&mild])),
        (
            "tests/workloads/threads.c (contended)",
            "40ms",
            argv(&[&toy]),
        ),
    ];
    let trace = dir.join("threads.trace");

    println!("## bench threads");
    println!();
    println!(
        "Command: `{}` ({recordings} recordings per program)",
        invocation()
    );
    println!("Machine: {} ({})", machine(), load_average());
    println!();
    println!(
        "Each program is recorded {recordings} times (`{}`) and every recording replayed with \
         `uniplay replay TRACE --jobs 1 --json`. Inputs: `{text}` (3 MB of text), `{nums}` \
         (200,000 numbers), `{script}` (3 threads squaring ranges from a `queue.Queue`).",
        shell_join(&record_argv(&trace, &["--epoch", "E"], &argv(&["CMD"])))
    );
    println!();
    println!("| program | epoch | lock order | record s (median) | epochs | verified | sync order | not reached | state at the cut | other | skipped | futex no-ops added / dropped |");
    println!("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (name, epoch, cmd) in &programs {
        for (order, flags) in [
            ("recorded", vec!["--epoch", epoch]),
            ("off", vec!["--epoch", epoch, "--no-sync-order"]),
        ] {
            let mut sum = Tally::default();
            for i in 0..recordings {
                eprintln!("xtask: {name} (lock order {order}): recording {}", i + 1);
                sum.record_s
                    .push(time_run(&record_argv(&trace, &flags, cmd))?);
                replay(&trace, &mut sum)?;
            }
            let Tally {
                epochs,
                verified,
                skipped,
                futex,
                not_reached,
                state,
                other,
                noops_added,
                noops_dropped,
                mut record_s,
            } = sum;
            let pct = if epochs == 0 {
                0.0
            } else {
                100.0 * verified as f64 / epochs as f64
            };
            record_s.sort_by(f64::total_cmp);
            let median = record_s.get(record_s.len() / 2).copied().unwrap_or(0.0);
            println!(
                "| {name}: `{}` | {epoch} | {order} | {median:.2} | {epochs} | {verified} ({pct:.0}%) | {futex} | {not_reached} | {state} | {other} | {skipped} | {noops_added} / {noops_dropped} |",
                shell_join(cmd)
            );
        }
    }
    println!();
    println!(
        "Lock order: `recorded` is `record`'s default (uprobes on libc's lock, condition-variable, \
         rwlock, barrier and semaphore calls of multithreaded processes, followed by replay), \
         `off` is `record --no-sync-order`. Record s: the median wall time of the recordings. \
         Columns after `verified` count the epochs that did not verify by their first divergence: \
         at a futex call or a recorded lock call (the serial run ordered the threads' lock and \
         condition-variable work differently), a thread cut in a loop the replay could not find in time (\"not reached\"), \
         all calls matched but memory or registers differ at the next checkpoint, or anything else. \
         Futex no-ops: futex calls that changed nothing (a wake of nobody, a wait answered EAGAIN) \
         that the replay made without the recording, or the recording made without the replay; \
         they are timing, not divergences (README, Replaying)."
    );
    Ok(())
}

fn write_inputs(text: &Path, nums: &Path) -> Result<()> {
    // Deterministic pseudo-random content (xorshift), compressible like text.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let words = [
        "alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta",
    ];
    let mut s = String::new();
    while s.len() < 3_000_000 {
        let v = next();
        let _ = writeln!(
            s,
            "{} {} {}",
            words[(v % 8) as usize],
            v % 100_000,
            words[(v >> 8) as usize % 8]
        );
    }
    fs::write(text, s)?;
    let mut n = String::new();
    for _ in 0..200_000 {
        let _ = writeln!(n, "{}", next() % 1_000_000);
    }
    fs::write(nums, n)?;
    Ok(())
}

/// Replays `trace` serially and counts its epochs into `t`.
fn replay(trace: &Path, t: &mut Tally) -> Result<()> {
    let (v, _) = replay_json(&argv(&[
        &uniplay().display().to_string(),
        "replay",
        &trace.display().to_string(),
        "--jobs",
        "1",
        "--json",
    ]))?;
    for e in v["epochs"].as_array().into_iter().flatten() {
        t.epochs += 1;
        for p in processes(e) {
            t.noops_added += p["futex_noops_added"].as_u64().unwrap_or(0);
            t.noops_dropped += p["futex_noops_dropped"].as_u64().unwrap_or(0);
        }
        match e["status"].as_str() {
            Some("verified") => t.verified += 1,
            Some("skipped") => t.skipped += 1,
            _ => {
                let d = &e["first_divergence"];
                let text = format!("{} {}", d["expected"], d["actual"]);
                if d.is_null() {
                    t.state += 1;
                } else if text.contains("not reached") {
                    t.not_reached += 1;
                } else if text.contains("futex(")
                    || text.contains("pthread_")
                    || text.contains("sem_")
                    || text.contains("a sync function")
                {
                    t.futex += 1;
                } else {
                    t.other += 1;
                }
            }
        }
    }
    Ok(())
}

/// An epoch's processes and the children they forked, recursively.
fn processes(epoch: &serde_json::Value) -> Vec<&serde_json::Value> {
    let mut out = Vec::new();
    let mut todo: Vec<&serde_json::Value> = epoch["processes"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    while let Some(p) = todo.pop() {
        todo.extend(p["children"].as_array().into_iter().flatten());
        out.push(p);
    }
    out
}
