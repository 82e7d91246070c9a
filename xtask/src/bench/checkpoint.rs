//! `cargo xtask bench checkpoint`: how long a checkpoint stops the target,
//! by resident memory, and how much checkpointing slows a running workload
//! down, by epoch length.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use super::{
    argv, bench_dir, calibrate, invocation, machine, median, shell_join, time_run, uniplay,
    workload,
};

/// Resident sizes of the stop-time workload, MiB.
const SIZES_MIB: [u64; 3] = [10, 100, 1024];
/// MiB the stop-time workload rewrites every 50 ms (the same pages each time).
const CHANGED_MIB: u64 = 10;
/// How long the stop-time workload keeps rewriting once recorded, ms.
const RESIDENT_MS: u64 = 3000;
/// Epoch length of the stop-time recordings.
const STOP_EPOCH: &str = "250ms";
/// Stop-time targets: any checkpoint at 1 GiB, and a later checkpoint at
/// 1 GiB with `CHANGED_MIB` changed.
const STOP_TARGET_MS: f64 = 20.0;
const STOP_CHANGED_TARGET_MS: f64 = 2.0;

/// Chunks per thread of the CPU job (each ~`CHUNK_SECS` natively).
const CPU_CHUNKS: u64 = 200;
const CHUNK_SECS: f64 = 0.010;
const EPOCHS: [&str; 3] = ["100ms", "250ms", "1s"];
/// Slowdown target at the default epoch, against `--no-checkpoints`.
const SLOWDOWN_TARGET: f64 = 0.10;
const DEFAULT_EPOCH: &str = "250ms";

pub fn run(runs: usize, recordings: usize) -> Result<()> {
    println!("## bench checkpoint");
    println!();
    println!(
        "Command: `{}` ({recordings} recordings per size for stop times, {runs} runs per configuration \
         for slowdown)",
        invocation()
    );
    println!("Machine: {} ({})", machine(), load_average());
    println!();
    stop_times(recordings)?;
    println!();
    slowdown(runs)?;
    Ok(())
}

/// One checkpoint as `uniplay inspect --summary --json` reports it.
#[derive(Debug, Clone, Copy)]
struct Cp {
    stop_ms: f64,
    pages: u64,
}

fn stop_times(recordings: usize) -> Result<()> {
    let resident = workload("bench_resident")?.display().to_string();
    let trace = bench_dir().join("checkpoint.trace");
    let pid_argv = record_pid_argv(&trace, "PID");
    println!("### Stop time per checkpoint, by resident memory");
    println!();
    println!(
        "Workload: `{}` (C, `gcc -O2 -pthread`): allocate N MiB, write non-zero data to every page, print \
         `ready`, then for {} s: sleep 50 ms, rewrite the same first {CHANGED_MIB} MiB.",
        shell_join(&argv(&[
            &resident,
            "N",
            &CHANGED_MIB.to_string(),
            &RESIDENT_MS.to_string()
        ])),
        RESIDENT_MS as f64 / 1e3
    );
    println!(
        "Recorded once it is `ready` (attach mode, so that the first checkpoint finds all N MiB resident \
         and stores every page): `{}`; stop times from `{}`.",
        shell_join(&pid_argv),
        shell_join(&argv(&[
            &uniplay().display().to_string(),
            "inspect",
            &trace.display().to_string(),
            "--summary",
            "--json"
        ]))
    );
    println!();

    let mut firsts: Vec<Vec<Cp>> = vec![Vec::new(); SIZES_MIB.len()];
    let mut laters: Vec<Vec<Cp>> = vec![Vec::new(); SIZES_MIB.len()];
    for rep in 0..recordings {
        // Interleaved: every size once per round, the order rotated.
        for k in 0..SIZES_MIB.len() {
            let s = (rep + k) % SIZES_MIB.len();
            let mib = SIZES_MIB[s];
            let cps = record_resident(&resident, mib, &trace)?;
            let _ = fs::remove_dir_all(&trace);
            let Some((first, later)) = cps.split_first() else {
                bail!("recording of {mib} MiB has no checkpoint");
            };
            eprintln!(
                "xtask:   {mib:>5} MiB run {}: first {:.1} ms ({} pages), later {:?} ms",
                rep + 1,
                first.stop_ms,
                first.pages,
                later
                    .iter()
                    .map(|c| (c.stop_ms * 10.0).round() / 10.0)
                    .collect::<Vec<_>>()
            );
            firsts[s].push(*first);
            laters[s].extend_from_slice(later);
        }
    }

    println!(
        "| resident | first checkpoint: stop median / max (ms) | pages stored | later checkpoints: stop \
         median / max (ms) | pages stored per later checkpoint (median) | later checkpoints |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    let stat = |v: &[Cp]| {
        let stops: Vec<f64> = v.iter().map(|c| c.stop_ms).collect();
        let max = stops.iter().copied().fold(f64::NAN, f64::max);
        (median(&stops), max)
    };
    for (s, &mib) in SIZES_MIB.iter().enumerate() {
        let (fm, fx) = stat(&firsts[s]);
        let (lm, lx) = stat(&laters[s]);
        let first_pages = median(&firsts[s].iter().map(|c| c.pages as f64).collect::<Vec<_>>());
        let later_pages = median(&laters[s].iter().map(|c| c.pages as f64).collect::<Vec<_>>());
        println!(
            "| {} | {fm:.2} / {fx:.2} | {first_pages:.0} ({:.0} MiB) | {lm:.2} / {lx:.2} | {later_pages:.0} \
             ({:.1} MiB) | {} |",
            size_label(mib),
            first_pages * 4096.0 / (1 << 20) as f64,
            later_pages * 4096.0 / (1 << 20) as f64,
            laters[s].len()
        );
    }
    println!();
    println!(
        "Stop = `stop_ns`: from interrupting the first thread until the target resumes (by then the \
         copy-on-write snapshot child has been forked, or, for a write-tracked process (`--track-writes`, \
         default `auto`: 16 MiB resident or more), the pages written since the pre-copy just before the cut \
         have been copied; pages are hashed, diffed and stored after the target resumes). First checkpoint = \
         the one taken at attach, which stores every page (a tracked process's pages are stored before the \
         cut, while it runs; a smaller one is forked and its first later checkpoint forks again); later \
         ones store the pages changed since the previous one. Medians and maxima \
         over the checkpoints of {recordings} recordings per size, sizes interleaved."
    );
    println!();

    let big = SIZES_MIB.len() - 1;
    let (fm, _) = stat(&firsts[big]);
    let (lm, lx) = stat(&laters[big]);
    let worst = fm.max(lm);
    println!(
        "- Target: stop ≤ {STOP_TARGET_MS:.0} ms at 1 GiB (larger of the first and later medians): \
         {worst:.2} ms (max {:.2} ms) → **{}**{}",
        fx_max(&firsts[big], &laters[big]),
        verdict(worst <= STOP_TARGET_MS),
        if worst > STOP_TARGET_MS && fm >= lm {
            " (the first checkpoint forks: the page-table copy of 1 GiB alone takes most of it)"
        } else {
            ""
        }
    );
    println!(
        "- Target: stop ≤ {STOP_CHANGED_TARGET_MS:.0} ms at 1 GiB when {CHANGED_MIB} MiB changed (later \
         checkpoints' median): {lm:.2} ms (max {lx:.2} ms) → **{}**{}",
        verdict(lm <= STOP_CHANGED_TARGET_MS),
        if lm > STOP_CHANGED_TARGET_MS {
            " (see `UNIPLAY_CHECKPOINT_DEBUG=1` for where the stop goes)"
        } else {
            ""
        }
    );
    Ok(())
}

fn fx_max(a: &[Cp], b: &[Cp]) -> f64 {
    a.iter()
        .chain(b)
        .map(|c| c.stop_ms)
        .fold(f64::NAN, f64::max)
}

fn size_label(mib: u64) -> String {
    if mib >= 1024 && mib.is_multiple_of(1024) {
        format!("{} GiB", mib / 1024)
    } else {
        format!("{mib} MiB")
    }
}

pub(super) fn verdict(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "MISS"
    }
}

/// `uniplay record --pid PID` with the stop-time bench's options.
fn record_pid_argv(out: &Path, pid: &str) -> Vec<String> {
    argv(&[
        &uniplay().display().to_string(),
        "record",
        "--quiet",
        "--allow-loss",
        "-o",
        &out.display().to_string(),
        "--force",
        "--epoch",
        STOP_EPOCH,
        "--pid",
        pid,
    ])
}

/// Runs the resident-memory workload at `mib` MiB, records it from when it
/// is ready until it exits, and returns its checkpoints in epoch order.
fn record_resident(exe: &str, mib: u64, trace: &Path) -> Result<Vec<Cp>> {
    let mut child = Command::new(exe)
        .args([
            mib.to_string(),
            CHANGED_MIB.to_string(),
            RESIDENT_MS.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot run {exe}"))?;
    let mut line = String::new();
    let stdout = child.stdout.take().context("workload stdout")?;
    BufReader::new(stdout).read_line(&mut line)?;
    if line.trim() != "ready" {
        let _ = child.kill();
        let _ = child.wait();
        bail!("{exe} {mib}: expected `ready`, got {line:?}");
    }
    let rec = record_pid_argv(trace, &child.id().to_string());
    let recorded = time_run(&rec);
    let status = child.wait()?;
    recorded.context("recording the resident-memory workload")?;
    if !status.success() {
        bail!("{exe} {mib} failed: {status}");
    }
    let summary = summary_json(trace)?;
    let mut cps: Vec<(u64, Cp)> = summary["checkpoints"]
        .as_array()
        .context("summary has no `checkpoints`")?
        .iter()
        .map(|c| {
            (
                c["epoch"].as_u64().unwrap_or(0),
                Cp {
                    stop_ms: c["stop_ns"].as_u64().unwrap_or(0) as f64 / 1e6,
                    pages: c["pages"].as_u64().unwrap_or(0),
                },
            )
        })
        .collect();
    cps.sort_by_key(|c| c.0);
    Ok(cps.into_iter().map(|c| c.1).collect())
}

/// `uniplay inspect DIR --summary --json`, parsed.
fn summary_json(trace: &Path) -> Result<serde_json::Value> {
    let out = Command::new(uniplay())
        .arg("inspect")
        .arg(trace)
        .args(["--summary", "--json"])
        .stdin(Stdio::null())
        .output()
        .context("cannot run uniplay inspect")?;
    if !out.status.success() {
        bail!(
            "uniplay inspect {} failed ({}): {}",
            trace.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    serde_json::from_slice(&out.stdout).context("parse uniplay inspect --summary --json")
}

/// Checkpoints (epoch marks) in a trace, from its `meta.json`.
fn checkpoints_in(trace: &Path) -> Result<u64> {
    let path = trace.join("meta.json");
    let text = fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    let meta: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))?;
    Ok(meta["event_counts"]["epoch"].as_u64().unwrap_or(0))
}

/// The 1-minute load average, as a note on how busy the machine was.
pub(super) fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .map(|l| format!("load average {l} at start"))
        .unwrap_or_else(|| "load average unknown".into())
}

/// `uniplay record` of `cmd` into `out` with `opts` (e.g. `--epoch 1s`).
pub(super) fn record_argv(out: &Path, opts: &[&str], cmd: &[String]) -> Vec<String> {
    let mut v = argv(&[
        &uniplay().display().to_string(),
        "record",
        "--quiet",
        "--allow-loss",
        "-o",
        &out.display().to_string(),
        "--force",
    ]);
    v.extend(argv(opts));
    v.push("--".into());
    v.extend(cmd.iter().cloned());
    v
}

fn slowdown(runs: usize) -> Result<()> {
    let cpujob = workload("bench_cpujob")?.display().to_string();
    let out = bench_dir().join("cpujob.out").display().to_string();
    let rounds = calibrate(1_000_000, CHUNK_SECS * 10.0, |n| {
        argv(&[&cpujob, &out, "10", &n.to_string()])
    })?;
    let cmd = argv(&[&cpujob, &out, &CPU_CHUNKS.to_string(), &rounds.to_string()]);
    let trace = bench_dir().join("checkpoint.trace");

    // (label, uniplay options or None for native)
    let mut configs: Vec<(String, Option<Vec<&str>>)> = vec![
        ("native".into(), None),
        (
            "uniplay --no-checkpoints".into(),
            Some(vec!["--no-checkpoints"]),
        ),
    ];
    for e in EPOCHS {
        configs.push((format!("uniplay --epoch {e}"), Some(vec!["--epoch", e])));
    }
    let argv_of = |c: &Option<Vec<&str>>| match c {
        None => cmd.clone(),
        Some(opts) => record_argv(&trace, opts, &cmd),
    };

    println!("### Slowdown of a running workload, by epoch length");
    println!();
    println!(
        "Workload: `{}` (2 threads, {CPU_CHUNKS} chunks of ~{:.0} ms CPU each, one write(2) per chunk; \
         rounds calibrated on this machine). Each run timed as a whole process, stdout/stderr to /dev/null:",
        shell_join(&cmd),
        CHUNK_SECS * 1e3
    );
    println!();
    for (label, c) in &configs {
        let shown = match c {
            None => "CMD".to_string(),
            Some(opts) => shell_join(&record_argv(&trace, opts, &argv(&["CMD"]))),
        };
        println!("- {label}: `{shown}`");
    }
    println!();

    let mut times: Vec<Vec<f64>> = vec![Vec::new(); configs.len()];
    let mut cps: Vec<Vec<f64>> = vec![Vec::new(); configs.len()];
    time_run(&cmd)?; // warm-up
    for rep in 0..runs {
        for k in 0..configs.len() {
            let i = (rep + k) % configs.len();
            let secs = time_run(&argv_of(&configs[i].1))
                .with_context(|| format!("{} run {}", configs[i].0, rep + 1))?;
            eprintln!("xtask:   run {} {:<26} {secs:8.3} s", rep + 1, configs[i].0);
            times[i].push(secs);
            if configs[i].1.is_some() {
                cps[i].push(checkpoints_in(&trace)? as f64);
                let _ = fs::remove_dir_all(&trace);
            }
        }
    }
    let native = median(&times[0]);
    let nockpt = median(&times[1]);
    println!(
        "| configuration | wall (s) | min–max (s) | × native | × --no-checkpoints | checkpoints per run |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for (i, (label, c)) in configs.iter().enumerate() {
        let m = median(&times[i]);
        let ck = if c.is_none() {
            "".to_string()
        } else {
            format!("{:.0}", median(&cps[i]))
        };
        let vs = if i == 0 {
            "".to_string()
        } else {
            format!("{:.3}", m / nockpt)
        };
        let lo = times[i].iter().copied().fold(f64::NAN, f64::min);
        let hi = times[i].iter().copied().fold(f64::NAN, f64::max);
        println!(
            "| {label} | {m:.3} | {lo:.3}–{hi:.3} | {:.3} | {vs} | {ck} |",
            m / native
        );
    }
    println!();
    println!(
        "Medians over {runs} interleaved runs (after one untimed native run). The ratio to \
         `--no-checkpoints` isolates checkpointing (ptrace supervision, vDSO patching, copying mapped \
         files, the checkpoints themselves) from the eBPF recording both do."
    );
    println!();
    let d = EPOCHS.iter().position(|&e| e == DEFAULT_EPOCH).unwrap_or(1) + 2;
    let ratio = median(&times[d]) / nockpt;
    println!(
        "- Target: ≤ {:.0}% slowdown at the default epoch ({DEFAULT_EPOCH}) against `--no-checkpoints`: \
         {:+.1}% → **{}**",
        SLOWDOWN_TARGET * 100.0,
        (ratio - 1.0) * 100.0,
        verdict(ratio <= 1.0 + SLOWDOWN_TARGET)
    );
    Ok(())
}
