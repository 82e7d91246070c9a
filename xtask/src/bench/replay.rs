//! `cargo xtask bench replay`: replay time at `--jobs 1` and `--jobs 2`
//! against the native run time.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use super::calibrate;
use super::checkpoint::{load_average, record_argv, verdict};
use super::{
    argv, bench_dir, invocation, machine, median, shell_join, time_run, uniplay, workload,
};

/// Iterations of the replay workload (one getppid each).
const ITERATIONS: u64 = 50_000;
/// Native duration the workload is sized to.
const TARGET_SECS: f64 = 1.0;
const EPOCH: &str = "100ms";
const MIN_EPOCHS: usize = 8;
const SPEEDUP_TARGET: f64 = 1.8;
const SERIAL_TARGET: f64 = 3.0;
const JOBS: [usize; 2] = [1, 2];

/// One `uniplay replay --json` run.
#[derive(Debug, Clone, Copy)]
struct Replay {
    /// The report's `elapsed_ns`, seconds.
    elapsed: f64,
    /// The whole process, seconds.
    wall: f64,
    epochs: usize,
    verified: u64,
    diverged: u64,
    skipped: u64,
}

pub fn run(runs: usize) -> Result<()> {
    let exe = workload("bench_replay")?.display().to_string();
    let iters = ITERATIONS.to_string();
    let rounds = calibrate(2000, TARGET_SECS, |n| argv(&[&exe, &iters, &n.to_string()]))?;
    let cmd = argv(&[&exe, &iters, &rounds.to_string()]);
    let trace = bench_dir().join("replay.trace");
    let rec = record_argv(&trace, &["--epoch", EPOCH], &cmd);
    let replay_argv = |jobs: usize| {
        argv(&[
            &uniplay().display().to_string(),
            "replay",
            &trace.display().to_string(),
            "--jobs",
            &jobs.to_string(),
            "--json",
        ])
    };

    println!("## bench replay");
    println!();
    println!("Command: `{}` ({runs} runs)", invocation());
    println!("Machine: {} ({})", machine(), load_average());
    println!();
    println!(
        "Workload: `{}` (C, `gcc -O2 -pthread`): single-threaded, {ITERATIONS} iterations of hash rounds \
         (calibrated to ~{:.0} µs each) followed by a getppid(2), and a 64-byte write(2) to /dev/null every \
         8th iteration.",
        shell_join(&cmd),
        TARGET_SECS / ITERATIONS as f64 * 1e6
    );
    println!();
    println!("- native: `CMD`, timed as a whole process, stdout/stderr to /dev/null");
    println!(
        "- recorded once: `{}`",
        shell_join(&record_argv(&trace, &["--epoch", EPOCH], &argv(&["CMD"])))
    );
    for j in JOBS {
        println!(
            "- replay --jobs {j}: `{}`; time = the report's `elapsed_ns`",
            shell_join(&replay_argv(j))
        );
    }
    println!();

    time_run(&cmd)?; // warm-up
    let record_secs = time_run(&rec).context("recording the replay workload")?;
    let checkpoints = count_checkpoints(&trace)?;
    eprintln!("xtask: recorded in {record_secs:.3} s, {checkpoints} checkpoints");

    let mut native = Vec::new();
    let mut replays: [Vec<Replay>; 2] = Default::default();
    for rep in 0..runs {
        // native, j1, j2, rotated.
        for k in 0..3 {
            match (rep + k) % 3 {
                0 => {
                    let s = time_run(&cmd)?;
                    eprintln!("xtask:   run {} native          {s:8.3} s", rep + 1);
                    native.push(s);
                }
                t => {
                    let r = replay(&replay_argv(JOBS[t - 1]))?;
                    eprintln!(
                        "xtask:   run {} replay --jobs {} {:8.3} s ({}/{} verified, {} diverged)",
                        rep + 1,
                        JOBS[t - 1],
                        r.elapsed,
                        r.verified,
                        r.epochs,
                        r.diverged
                    );
                    replays[t - 1].push(r);
                }
            }
        }
    }
    let _ = fs::remove_dir_all(&trace);

    let epochs = replays[0].first().map(|r| r.epochs).unwrap_or(0);
    if epochs < MIN_EPOCHS {
        bail!("the recording has {epochs} epochs, fewer than {MIN_EPOCHS}: lengthen the workload");
    }
    let nat = median(&native);
    let el = |j: usize| median(&replays[j].iter().map(|r| r.elapsed).collect::<Vec<_>>());
    let wall = |j: usize| median(&replays[j].iter().map(|r| r.wall).collect::<Vec<_>>());
    let range = |j: usize| {
        let v = replays[j].iter().map(|r| r.elapsed);
        let lo = v.clone().fold(f64::NAN, f64::min);
        let hi = v.fold(f64::NAN, f64::max);
        format!("{lo:.2}–{hi:.2}")
    };
    let (j1, j2) = (el(0), el(1));
    let speedup = j1 / j2;
    let serial = j1 / nat;
    let verified_cell = |j: usize| {
        let span = |f: fn(&Replay) -> u64| {
            let v: Vec<u64> = replays[j].iter().map(f).collect();
            let (lo, hi) = (
                v.iter().min().copied().unwrap_or(0),
                v.iter().max().copied().unwrap_or(0),
            );
            if lo == hi {
                lo.to_string()
            } else {
                format!("{lo}–{hi}")
            }
        };
        let mut s = format!("{}/{epochs}", span(|r| r.verified));
        let mut not = Vec::new();
        if replays[j].iter().any(|r| r.diverged > 0) {
            not.push(format!("{} diverged", span(|r| r.diverged)));
        }
        if replays[j].iter().any(|r| r.skipped > 0) {
            not.push(format!("{} skipped", span(|r| r.skipped)));
        }
        if !not.is_empty() {
            s.push_str(&format!(" ({})", not.join(", ")));
        }
        s
    };

    println!(
        "| workload | native (s) | record (s) | epochs | replay --jobs 1 (s, ×native) | replay --jobs 2 \
         (s, ×native) | speedup j2/j1 | verified j1 | verified j2 |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---|---|");
    println!(
        "| single-threaded CPU + syscalls | {nat:.3} | {record_secs:.3} | {epochs} | {j1:.3} (×{:.2}; {}; \
         wall {:.3}) | {j2:.3} (×{:.2}; {}; wall {:.3}) | {speedup:.2} | {} | {} |",
        j1 / nat,
        range(0),
        wall(0),
        j2 / nat,
        range(1),
        wall(1),
        verified_cell(0),
        verified_cell(1)
    );
    println!();
    println!(
        "Medians over {runs} interleaved runs (after one untimed native run) of one recording \
         ({checkpoints} checkpoints, epoch {EPOCH}). Replay time = `elapsed_ns` of `uniplay replay --json` \
         with its min–max over the runs (wall = the whole process, start-up included, median). \
         Verified = epochs whose replay matched the next checkpoint, out of all epochs (min–max over runs \
         when they differ); a diverged epoch still counts in the time."
    );
    println!();
    println!(
        "- Target: speedup of --jobs 2 over --jobs 1 ≥ {SPEEDUP_TARGET:.1}×: {speedup:.2}× → **{}**{}",
        verdict(speedup >= SPEEDUP_TARGET),
        if std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) < 2 {
            " (this machine has one CPU)"
        } else {
            ""
        }
    );
    println!(
        "- Target: serial replay (--jobs 1) ≤ {SERIAL_TARGET:.0}× native: {serial:.2}× → **{}**",
        verdict(serial <= SERIAL_TARGET)
    );
    let all_verified = replays
        .iter()
        .flatten()
        .all(|r| r.verified as usize == r.epochs);
    if !all_verified {
        println!(
            "- Not every epoch verified (see the verified columns): the times include diverged epochs."
        );
    }
    Ok(())
}

/// Runs `uniplay replay ... --json`; a diverged replay (exit 6) still
/// reports its times.
fn replay(argv: &[String]) -> Result<Replay> {
    let (v, wall) = replay_json(argv)?;
    Ok(Replay {
        elapsed: v["elapsed_ns"].as_u64().context("no elapsed_ns")? as f64 / 1e9,
        wall,
        epochs: v["epochs"].as_array().map(|a| a.len()).unwrap_or(0),
        verified: v["verified"].as_u64().unwrap_or(0),
        diverged: v["diverged"].as_u64().unwrap_or(0),
        skipped: v["skipped"].as_u64().unwrap_or(0),
    })
}

/// Runs `uniplay replay ... --json` and returns its report and wall time;
/// a replay that diverged (exit 6) still has its report.
pub(super) fn replay_json(argv: &[String]) -> Result<(serde_json::Value, f64)> {
    let t = Instant::now();
    let out = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("cannot run {}", argv[0]))?;
    let wall = t.elapsed().as_secs_f64();
    if !out.status.success() && out.status.code() != Some(6) {
        bail!(
            "`{}` failed ({}): {}",
            shell_join(argv),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let v = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("parse the output of `{}`", shell_join(argv)))?;
    Ok((v, wall))
}

/// Checkpoint directories in a trace.
fn count_checkpoints(trace: &Path) -> Result<usize> {
    let dir = trace.join("checkpoints");
    Ok(fs::read_dir(&dir)
        .with_context(|| format!("read {}", dir.display()))?
        .filter(|e| e.as_ref().map(|e| e.path().is_dir()).unwrap_or(false))
        .count())
}
