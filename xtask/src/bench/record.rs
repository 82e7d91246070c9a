//! `cargo xtask bench record`: whole-process wall time of workloads run
//! natively, under `uniplay record`, `strace -f` and `perf trace`.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::{
    argv, bench_dir, calibrate, invocation, machine, measure_sizes, median, per_event, perf_argv,
    perf_trace_unusable, shell_join, strace_argv, strace_unusable, text_cell, time_run,
    trace_stats, uniplay_argv, workload, TraceStats,
};

/// Native wall time the syscall-loop and ping-pong workloads are sized to.
const TARGET_SECS: f64 = 0.3;
/// Chunks of work per thread in the CPU job, each followed by one write:
/// about 2 s, so that the recorder's fixed start-up (the `true` row) does
/// not stand for its steady-state overhead.
const CPU_CHUNKS: u64 = 200;
/// Native duration of one CPU-job chunk.
const CHUNK_SECS: f64 = 0.010;
const BIG_FILE_LEN: u64 = 1 << 30;

const TOOLS: [&str; 4] = ["native", "uniplay", "strace", "perf trace"];

struct Workload {
    label: String,
    cmd: Vec<String>,
}

pub fn run(runs: usize, budget: f64) -> Result<()> {
    let workloads = prepare()?;
    let trace = bench_dir().join("record.trace");
    let perf_why = perf_trace_unusable();
    let strace_why = strace_unusable();

    println!("## bench record");
    println!();
    println!(
        "Command: `{}` ({runs} runs, per-tool budget {budget:.0} s per workload)",
        invocation()
    );
    println!("Machine: {}", machine());
    println!();
    println!("Each run is timed as a whole process (spawn to exit), stdout/stderr to /dev/null:");
    println!();
    let cmd = ["CMD".to_string()];
    println!("- native: `CMD`");
    println!("- uniplay: `{}`", shell_join(&uniplay_argv(&trace, &cmd)));
    println!(
        "- strace: `{}`",
        shell_join(&strace_argv("/dev/null", &cmd))
    );
    println!(
        "- perf trace: `{}`",
        shell_join(&perf_argv("/dev/null", &cmd))
    );
    println!();
    println!("Workloads (C ones built with `gcc -O2 -pthread` into target/bench/):");
    println!();
    for w in &workloads {
        println!("- {}: `{}`", w.label, shell_join(&w.cmd));
    }
    println!();

    let mut rows = Vec::new();
    let mut notes = Vec::new();
    for w in &workloads {
        eprintln!("xtask: bench record: {}: {}", w.label, shell_join(&w.cmd));
        let mut times: [Vec<f64>; 4] = Default::default();
        let mut spent = [0.0f64; 4];
        let mut failed: [Option<String>; 4] = [None, None, strace_why.clone(), perf_why.clone()];
        let mut stats: Vec<TraceStats> = Vec::new();
        // Warm-up (page cache, dynamic loader), not timed.
        time_run(&w.cmd)?;
        for rep in 0..runs {
            // Rotate the order so no tool always runs right after another.
            for k in 0..TOOLS.len() {
                let t = (rep + k) % TOOLS.len();
                if failed[t].is_some() || (rep > 0 && spent[t] > budget) {
                    continue;
                }
                let argv = match t {
                    0 => w.cmd.clone(),
                    1 => uniplay_argv(&trace, &w.cmd),
                    2 => strace_argv("/dev/null", &w.cmd),
                    _ => perf_argv("/dev/null", &w.cmd),
                };
                match time_run(&argv) {
                    Ok(secs) => {
                        eprintln!("xtask:   run {} {:<10} {secs:8.3} s", rep + 1, TOOLS[t]);
                        times[t].push(secs);
                        spent[t] += secs;
                        if t == 1 {
                            stats.push(trace_stats(&trace)?);
                        }
                    }
                    Err(e) if t == 0 => return Err(e.context(format!("native run of {}", w.label))),
                    Err(e) => {
                        eprintln!("xtask:   {} failed: {e:#}", TOOLS[t]);
                        failed[t] = Some(format!("{e:#}"));
                    }
                }
                if t == 1 {
                    let _ = fs::remove_dir_all(&trace);
                }
            }
        }
        let native = median(&times[0]);
        let cell = |t: usize| -> String {
            if times[t].is_empty() {
                return format!("n/a ({})", failed[t].as_deref().unwrap_or("not run"));
            }
            let m = median(&times[t]);
            let mut s = format!("{m:.3} (×{:.1})", m / native);
            if times[t].len() < runs {
                s.push_str(&format!(
                    " [{} run{}]",
                    times[t].len(),
                    if times[t].len() == 1 { "" } else { "s" }
                ));
            }
            s
        };
        let (eps, bpe, lost) = if stats.is_empty() {
            ("n/a".to_string(), "n/a".to_string(), "n/a".to_string())
        } else {
            let med = |f: fn(&TraceStats) -> u64| {
                median(&stats.iter().map(|s| f(s) as f64).collect::<Vec<_>>())
            };
            let events = med(|s| s.events);
            let bytes = med(|s| s.bytes);
            let log_bytes = med(|s| s.log_bytes);
            let lost = med(|s| s.ring_full + s.incomplete);
            let max_lost = stats
                .iter()
                .map(|s| s.ring_full + s.incomplete)
                .max()
                .unwrap_or(0);
            let mut lost_cell = format!("{lost:.0}");
            if lost > 0.0 {
                lost_cell.push_str(&format!(
                    " ({:.0} ring full + {:.0} incomplete copies)",
                    med(|s| s.ring_full),
                    med(|s| s.incomplete)
                ));
            }
            if max_lost as f64 > lost {
                lost_cell.push_str(&format!(", max {max_lost}"));
            }
            (
                format!("{:.0}", events / median(&times[1])),
                format!(
                    "{:.2} ({:.1} MB; event log {:.2})",
                    bytes / events.max(1.0),
                    bytes / 1e6,
                    log_bytes / events.max(1.0)
                ),
                lost_cell,
            )
        };
        if let Some(why) = failed.iter().skip(1).flatten().next() {
            notes.push(format!("{}: {why}", w.label));
        }
        rows.push(format!(
            "| {} | {native:.3} | {} | {} | {} | {eps} | {bpe} | {lost} |",
            w.label,
            cell(1),
            cell(2),
            cell(3)
        ));
    }

    println!(
        "| workload | native (s) | uniplay (s, ×native) | strace (s, ×native) | perf trace (s, ×native) \
         | uniplay events/s | trace bytes/event | lost events |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!("{r}");
    }
    println!();
    println!(
        "Medians over {runs} interleaved runs; `[n runs]` marks a tool stopped early because it had used its \
         {budget:.0} s budget on that workload. uniplay events/s = events in the trace / uniplay's wall time \
         (including its start-up, see the `true` row). Trace bytes/event = sum of the trace directory's file sizes \
         (including checkpoints/ and files/) / events; \"event log\" counts only its top-level files \
         (meta.json, events.tlf, index.tlf, blobs.tlf). \
         Lost events = meta.json `losses.ring_full + losses.incomplete_copies` (ring-full counts dropped \
         ring records; one large output spans several, so it can exceed the events recorded). \
         Each workload's native command runs once untimed first (warm page cache)."
    );
    for n in &notes {
        println!("- {n}");
    }

    // Output size for the syscall loop, shorter so strace and perf trace
    // finish in seconds (bytes per event do not depend on the length).
    let burst = &workloads[1];
    let n: u64 = burst.cmd[1].parse()?;
    let small = argv(&[&burst.cmd[0], &(n / 10).max(1000).to_string()]);
    eprintln!("xtask: bench record: output sizes: {}", shell_join(&small));
    let sizes = measure_sizes(&small, &trace)?;
    let _ = fs::remove_dir_all(&trace);
    println!();
    println!(
        "Output size per event, syscall loop `{}`:",
        shell_join(&small)
    );
    println!();
    println!("| tool | output | bytes | events | bytes/event |");
    println!("|---|---|---:|---:|---:|");
    let u = sizes.uniplay;
    println!(
        "| uniplay | whole trace directory (`-o DIR`, with checkpoints/ and files/) | {} | {} | {} |",
        u.bytes,
        u.events,
        per_event(u.bytes, u.events)
    );
    println!(
        "| uniplay | event log only (meta.json, events.tlf, index.tlf, blobs.tlf) | {} | {} | {} |",
        u.log_bytes,
        u.events,
        per_event(u.log_bytes, u.events)
    );
    for (tool, out, r) in [
        ("strace", "`strace -f -o FILE`", &sizes.strace),
        ("perf trace", "`perf trace -o FILE`", &sizes.perf),
    ] {
        match r {
            Ok((bytes, lines)) => println!(
                "| {tool} | {out} (text) | {bytes} | {lines} lines | {} |",
                per_event(*bytes, *lines)
            ),
            Err(_) => println!("| {tool} | {out} | {} | | |", text_cell(r)),
        }
    }
    Ok(())
}

/// Builds the workloads, sizes them for this machine and creates the 1 GiB
/// input file.
fn prepare() -> Result<Vec<Workload>> {
    let burst = workload("burst")?.display().to_string();
    let pingpong = workload("bench_pingpong")?.display().to_string();
    let cpujob = workload("bench_cpujob")?.display().to_string();

    let n_burst = calibrate(1_000_000, TARGET_SECS, |n| argv(&[&burst, &n.to_string()]))?;
    let n_ping = calibrate(10_000, TARGET_SECS, |n| argv(&[&pingpong, &n.to_string()]))?;
    let out = bench_dir().join("cpujob.out").display().to_string();
    let chunks = CPU_CHUNKS.to_string();
    let rounds = calibrate(1_000_000, CHUNK_SECS * 10.0, |n| {
        argv(&[&cpujob, &out, "10", &n.to_string()])
    })?;

    let big = crate::setup::cache_dir().join("bench/1g.bin");
    big_file(&big)?;
    let dd_if = format!("if={}", big.display());

    Ok(vec![
        Workload {
            label: "start-up only (`true`)".into(),
            cmd: argv(&["true"]),
        },
        Workload {
            label: "1. syscall loop (getppid)".into(),
            cmd: argv(&[&burst, &n_burst.to_string()]),
        },
        Workload {
            label: "2. mutex+condvar ping-pong, 2 threads".into(),
            cmd: argv(&[&pingpong, &n_ping.to_string()]),
        },
        Workload {
            label: "3. CPU job, 2 threads, a write every ~10 ms".into(),
            cmd: argv(&[&cpujob, &out, &chunks, &rounds.to_string()]),
        },
        Workload {
            label: "4. read a 1 GiB file (dd bs=1M)".into(),
            cmd: argv(&["dd", &dd_if, "of=/dev/null", "bs=1M"]),
        },
    ])
}

/// Creates `path` once: 1 GiB of pseudo-random bytes (xorshift64*).
fn big_file(path: &Path) -> Result<()> {
    if fs::metadata(path)
        .map(|m| m.len() == BIG_FILE_LEN)
        .unwrap_or(false)
    {
        return Ok(());
    }
    eprintln!(
        "xtask: writing {} (1 GiB of pseudo-random bytes, once)",
        path.display()
    );
    let dir = path.parent().context("cache path has a parent")?;
    fs::create_dir_all(dir)?;
    let tmp: PathBuf = path.with_extension("tmp");
    let mut f = File::create(&tmp).with_context(|| format!("create {}", tmp.display()))?;
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..BIG_FILE_LEN / buf.len() as u64 {
        for chunk in buf.chunks_exact_mut(8) {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            chunk.copy_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
        }
        f.write_all(&buf)?;
    }
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, path)?;
    if fs::metadata(path)?.len() != BIG_FILE_LEN {
        bail!("{} has the wrong size", path.display());
    }
    Ok(())
}
