//! `cargo xtask bench format`: trace size on real recordings against strace
//! and perf trace output, and the tracelog crate's write/read throughput.

use std::fs;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use tracelog::{
    Args, Event, EventKind, Meta, Syscall, Trace, TraceWriter, WriterOptions,
    SYSCALL_INCOMPLETE_COPY,
};

use super::{
    argv, bench_dir, disk_bytes, invocation, machine, measure_sizes, median, per_event, shell_join,
    text_cell, workload,
};

/// Target from the issue: bytes per event of syscall-heavy recordings
/// without payloads.
const MAX_BYTES_PER_EVENT: f64 = 6.0;
/// Target from the issue: events read per second on one core.
const MIN_READ_EPS: f64 = 10e6;
const SYS_GETPPID: u32 = 110;

pub fn run(runs: usize, n: u64) -> Result<()> {
    println!("## bench format");
    println!();
    println!("Command: `{}`", invocation());
    println!("Machine: {}", machine());
    println!();
    real_recordings()?;
    println!();
    throughput(runs, n)
}

fn pass(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "MISS"
    }
}

/// Bytes per event of real recordings, with and without output payloads,
/// next to strace's and perf trace's text output for the same command.
fn real_recordings() -> Result<()> {
    let burst = workload("burst")?.display().to_string();
    let python = if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    let py_code = "import json, zlib; d = [list(range(i)) for i in range(300)]; \
                   print(zlib.crc32(json.dumps(d).encode()))";
    let cmds = [
        ("getppid loop", argv(&[&burst, "200000"])),
        ("python3 -c (small script)", argv(&[python, "-c", py_code])),
        (
            "ls -laR /usr/share/doc",
            argv(&["ls", "-laR", "/usr/share/doc"]),
        ),
    ];
    let trace = bench_dir().join("format.trace");
    let stripped = bench_dir().join("format-nopayload.trace");
    let mut rows = Vec::new();
    for (label, cmd) in &cmds {
        eprintln!("xtask: bench format: recording {}", shell_join(cmd));
        let sizes = measure_sizes(cmd, &trace)?;
        let (events, payload) = strip_payloads(&trace, &stripped)?;
        let u = sizes.uniplay;
        if events != u.events {
            bail!(
                "{}: re-read {events} events, meta.json says {}",
                trace.display(),
                u.events
            );
        }
        let bare = disk_bytes(&stripped)?;
        let bare_pe = bare as f64 / events.max(1) as f64;
        rows.push(format!(
            "| {label} | {events} | {} | {} | {} | {bare_pe:.2} | {} | {} | {} |",
            per_event(u.bytes, u.events),
            per_event(u.log_bytes, u.events),
            payload,
            pass(bare_pe <= MAX_BYTES_PER_EVENT),
            text_cell(&sizes.strace),
            text_cell(&sizes.perf),
        ));
        let _ = fs::remove_dir_all(&trace);
        let _ = fs::remove_dir_all(&stripped);
    }
    println!("Bytes per event on real recordings (each command recorded once by each tool, stdout to /dev/null):");
    println!();
    for (label, cmd) in &cmds {
        println!("- {label}: `{}`", shell_join(cmd));
    }
    println!();
    println!(
        "| recording | uniplay events | uniplay whole trace dir B/event | uniplay event log B/event (with payload) \
         | payload bytes | uniplay event log B/event (without payload) | ≤ {MAX_BYTES_PER_EVENT} B/event | strace -f -o FILE (B/line) | perf trace -o FILE (B/line) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---|---:|---:|");
    for r in &rows {
        println!("{r}");
    }
    println!();
    println!(
        "Whole trace dir: sum of all file sizes, including checkpoints/ and files/ (copies of mapped \
         executables and libraries). Event log: its top-level files (meta.json, events.tlf, index.tlf, \
         blobs.tlf) as recorded. Without payload: the same \
         events read back with tracelog and re-written with the recorder's writer options after dropping \
         every syscall's output bytes. Payload bytes: output bytes in the recording (uncompressed). \
         strace and perf trace bytes are divided by their own line counts."
    );
    Ok(())
}

/// Copies the trace at `from` to `to` without syscall outputs; returns the
/// event count and the payload bytes dropped.
fn strip_payloads(from: &Path, to: &Path) -> Result<(u64, u64)> {
    let trace = Trace::open(from).with_context(|| format!("open {}", from.display()))?;
    let meta = trace.meta().clone();
    let opts = WriterOptions {
        force: true,
        ..WriterOptions::default()
    };
    let mut w = TraceWriter::create(to, meta.clone(), opts)?;
    let (mut events, mut payload) = (0u64, 0u64);
    for ev in trace.events() {
        let mut ev = ev.with_context(|| format!("read {}", from.display()))?;
        if let EventKind::Syscall(s) = &mut ev.kind {
            payload += s.outputs.iter().map(|o| o.data.len() as u64).sum::<u64>();
            s.outputs.clear();
            s.flags &= !SYSCALL_INCOMPLETE_COPY;
        }
        w.push(ev)?;
        events += 1;
    }
    w.finish(meta)?;
    Ok((events, payload))
}

/// Pins the calling thread (and threads it spawns later) to `cpus`.
fn pin(cpus: &[usize]) -> Result<()> {
    // SAFETY: cpu_set_t is a plain bit array for which all-zero is valid.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        // SAFETY: `set` is a valid cpu_set_t and CPU_SET bounds-checks `c`.
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    // SAFETY: pid 0 is the calling thread; `set` outlives the call and the
    // size passed is its size.
    let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if r != 0 {
        bail!("sched_setaffinity: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// `n` synthetic getppid events: two threads of one process on two CPUs,
/// 200–2000 ns apart, 100–500 ns long, no arguments, no payload.
fn synthetic(n: u64) -> Vec<Event> {
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut t = 1_000_000_000u64;
    (0..n)
        .map(|_| {
            let r = next();
            t += 200 + r % 1801;
            let dur = 100 + (r >> 16) % 401;
            let which = ((r >> 32) & 1) as u32;
            Event {
                seq: 0,
                epoch: 0,
                time_ns: t,
                cpu: which,
                pid: 4000,
                tid: 4000 + which,
                kind: EventKind::Syscall(Syscall {
                    nr: SYS_GETPPID,
                    args: Args::new(&[]),
                    ret: 3999,
                    enter_ns: t - dur,
                    flags: 0,
                    outputs: Vec::new(),
                }),
            }
        })
        .collect()
}

/// Pushes `events` into a new trace at `dir`; returns the seconds from
/// `create` to the end of `finish`.
fn write_trace(dir: &Path, events: Vec<Event>) -> Result<f64> {
    let meta = Meta {
        mode: "launch".into(),
        command: vec!["bench".into()],
        ..Meta::default()
    };
    let t = Instant::now();
    let mut w = TraceWriter::create(
        dir,
        meta.clone(),
        WriterOptions {
            force: true,
            ..WriterOptions::default()
        },
    )?;
    for ev in events {
        w.push(ev)?;
    }
    w.finish(meta)?;
    Ok(t.elapsed().as_secs_f64())
}

/// Opens the trace at `dir` and decodes every event; returns the seconds.
fn read_trace(dir: &Path, n: u64) -> Result<f64> {
    let t = Instant::now();
    let trace = Trace::open(dir)?;
    let mut count = 0u64;
    let mut sum = 0u64;
    for ev in trace.events() {
        let ev = ev?;
        sum = sum.wrapping_add(ev.time_ns);
        count += 1;
    }
    let secs = t.elapsed().as_secs_f64();
    std::hint::black_box(sum);
    if count != n {
        bail!("read {count} events back, wrote {n}");
    }
    Ok(secs)
}

/// tracelog write and read throughput on synthetic syscall events.
fn throughput(runs: usize, n: u64) -> Result<()> {
    let dir = bench_dir().join("synthetic.trace");
    let all_cpus: Vec<usize> = (0..std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1))
        .collect();
    let (mut w1, mut w2, mut r1) = (Vec::new(), Vec::new(), Vec::new());
    for rep in 0..runs {
        // Generation is not timed.
        pin(&[0])?;
        w1.push(write_trace(&dir, synthetic(n))?);
        pin(&all_cpus)?;
        w2.push(write_trace(&dir, synthetic(n))?);
        pin(&[0])?;
        r1.push(read_trace(&dir, n)?);
        pin(&all_cpus)?;
        eprintln!(
            "xtask: bench format: run {}: write 1 core {:.3} s, write 2 cores {:.3} s, read {:.3} s",
            rep + 1,
            w1[rep],
            w2[rep],
            r1[rep]
        );
    }
    let bytes = disk_bytes(&dir)?;
    let _ = fs::remove_dir_all(&dir);
    let bpe = bytes as f64 / n as f64;
    let eps = |v: &[f64]| n as f64 / median(v);
    let m = |x: f64| format!("{:.2} M", x / 1e6);

    println!(
        "tracelog throughput: {n} synthetic getppid events (two threads of one process on two CPUs, \
         200–2000 ns apart, 100–500 ns long, no payload), median of {runs} runs, default WriterOptions, \
         trace in target/bench/ (read from the page cache):"
    );
    println!();
    println!("| measurement | median time (s) | events/s | bytes/event | target | result |");
    println!("|---|---:|---:|---:|---|---|");
    println!(
        "| write: create + push ×{n} + finish, pinned to 1 CPU (compression thread shares it) | {:.3} | {} | {bpe:.2} \
         | ≤ {MAX_BYTES_PER_EVENT} B/event | {} |",
        median(&w1),
        m(eps(&w1)),
        pass(bpe <= MAX_BYTES_PER_EVENT)
    );
    println!(
        "| write: same, compression thread free to use a 2nd CPU | {:.3} | {} | {bpe:.2} | | |",
        median(&w2),
        m(eps(&w2))
    );
    println!(
        "| read: Trace::open + events() full iteration, pinned to 1 CPU | {:.3} | {} | {bpe:.2} | ≥ {} events/s | {} |",
        median(&r1),
        m(eps(&r1)),
        m(MIN_READ_EPS),
        pass(eps(&r1) >= MIN_READ_EPS)
    );
    Ok(())
}
