//! The flight recorder keeps only the newest K epochs on disk; a crash
//! leaves a finalised trace whose last epoch ends at the crash.

mod support;

use support::*;
use tracelog::{EventKind, TraceState};

fn dir_size(p: &std::path::Path) -> u64 {
    std::fs::read_dir(p)
        .map(|d| {
            d.flatten()
                .map(|e| {
                    if e.path().is_dir() {
                        dir_size(&e.path())
                    } else {
                        e.metadata().map(|m| m.len()).unwrap_or(0)
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn checkpoint_flight_recorder_bound_and_crash() {
    if !can_record() {
        return;
    }
    let _g = serial();
    let bin = workload("crash");
    let r = record(
        &["--epoch", "100ms", "--keep-epochs", "3"],
        &[bin.to_str().unwrap(), "2500"],
    );
    assert_eq!(
        r.code(),
        Some(128 + 11),
        "uniplay exits as the command did; stderr: {}",
        r.stderr()
    );
    let t = r.open();
    assert_eq!(t.state(), TraceState::Complete, "stderr: {}", r.stderr());
    assert_eq!(t.meta().exit.as_ref().map(|x| x.signal), Some(11));
    assert!(
        t.meta().end_reason.contains("SIGSEGV"),
        "{}",
        t.meta().end_reason
    );
    let cps = t.checkpoints();
    assert!(
        !cps.is_empty() && cps.len() <= 3,
        "{} checkpoints kept with --keep-epochs 3",
        cps.len()
    );
    let ev = r.events();
    let epochs: std::collections::BTreeSet<u32> = ev.iter().map(|e| e.epoch).collect();
    assert!(epochs.len() <= 3, "events of {} epochs kept", epochs.len());
    assert!(
        *epochs.iter().next().unwrap() >= 10,
        "old epochs were not dropped: {epochs:?}"
    );
    // The oldest kept checkpoint is still a full image (rebased).
    let oldest = cps[0].epoch;
    let mem = t.checkpoint_memory(oldest, t.meta().root_pid).unwrap();
    assert!(
        mem.len() > 10,
        "oldest kept checkpoint has {} pages",
        mem.len()
    );
    // The last epoch ends at the crash.
    let last = ev.last().unwrap();
    assert!(
        matches!(last.kind, EventKind::Exit { signal: 11, .. }),
        "last event {:?}",
        last.kind
    );
    assert!(dir_size(&r.trace) < 50 << 20);
}

#[test]
fn checkpoint_vdso_time_reads_are_recorded() {
    if !can_record() {
        return;
    }
    let _g = serial();
    let bin = workload("vdsotime");
    let r = record(&[], &[bin.to_str().unwrap()]);
    assert_eq!(r.code(), Some(0), "stderr: {}", r.stderr());
    let out = r.stdout();
    let line = out.lines().find(|l| l.starts_with("monotonic")).unwrap();
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap())
        .collect();
    let mut expect = v[0].to_le_bytes().to_vec();
    expect.extend_from_slice(&v[1].to_le_bytes());
    let ev = r.events();
    let calls = syscalls(&ev, "clock_gettime");
    assert!(
        calls
            .iter()
            .any(|(_, s)| s.outputs.iter().any(|o| o.data[..] == expect[..])),
        "the vDSO clock_gettime result is not in the trace"
    );
    assert!(
        !syscalls(&ev, "gettimeofday").is_empty(),
        "gettimeofday not recorded"
    );
    assert!(!syscalls(&ev, "time").is_empty(), "time not recorded");
}

#[test]
fn checkpoint_refuses_an_already_traced_target() {
    if !can_record() {
        return;
    }
    let _g = serial();
    let mut target = std::process::Command::new("sleep")
        .arg("5")
        .spawn()
        .unwrap();
    let mut strace = std::process::Command::new("strace")
        .args(["-o", "/dev/null", "-p", &target.id().to_string()])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(uniplay())
        .args(["record", "-q", "--pid", &target.id().to_string(), "-o"])
        .arg(dir.path().join("t"))
        .output()
        .unwrap();
    let _ = strace.kill();
    let _ = strace.wait();
    let _ = target.kill();
    let _ = target.wait();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(err.contains("already being traced"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}
