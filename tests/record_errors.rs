//! Bad input gets a one-line error that says what to do, and a documented
//! exit status; nothing half-written looks complete.

mod support;

use std::{process::Command, time::Duration};

use support::*;
use tracelog::TraceState;

fn run(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(uniplay()).args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn record_errors_usage() {
    let (code, err) = run(&["record", "-o", "/tmp/x"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("nothing to record"), "{err}");
    let (code, _) = run(&["record", "--ring-size", "3000", "--", "true"]);
    assert_eq!(code, Some(2));
}

#[test]
fn record_errors_bad_pid_and_existing_output() {
    if !can_record() {
        return;
    }
    let (code, err) = run(&["record", "-o", "/tmp/uniplay-never", "--pid", "999999999"]);
    assert_eq!(code, Some(5), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("no process with PID 999999999"), "{err}");

    // A zombie (a child of ours, not reaped yet) has nothing to record.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    while !std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_default()
        .contains(") Z ")
    {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let (code, err) = run(&[
        "record",
        "-o",
        "/tmp/uniplay-never",
        "--pid",
        &pid.to_string(),
    ]);
    let _ = child.wait();
    assert_eq!(code, Some(5), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("has exited"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let (code, err) = run(&["record", "-o", dir.path().to_str().unwrap(), "--", "true"]);
    assert_eq!(code, Some(5), "{err}");
    assert!(err.contains("--force"), "{err}");
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "existing dir was touched"
    );

    let (code, err) = run(&[
        "record",
        "-o",
        dir.path().join("t").to_str().unwrap(),
        "--",
        "/no/such/program",
    ]);
    // As a shell: 127 not found, 126 not executable; said in one line
    // before anything is recorded.
    assert_eq!(code, Some(127), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("cannot launch /no/such/program"), "{err}");
    assert!(!dir.path().join("t").exists(), "a trace was started");
    let plain = dir.path().join("plain.txt");
    std::fs::write(&plain, "not a program\n").unwrap();
    let (code, err) = run(&[
        "record",
        "-o",
        dir.path().join("t").to_str().unwrap(),
        "--",
        plain.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(126), "{err}");
}

#[test]
fn record_errors_target_killed_and_recorder_killed() {
    if !can_record() {
        return;
    }
    let _g = serial();
    // Target killed mid-recording: the trace is finalised and readable.
    let r = record(&[], &["sh", "-c", "kill -9 $$"]);
    assert_eq!(r.code(), Some(128 + 9), "stderr: {}", r.stderr());
    let t = r.open();
    assert_eq!(t.state(), TraceState::Complete);
    assert_eq!(t.meta().exit.as_ref().map(|x| x.signal), Some(9));

    // uniplay itself killed: readable up to the last flush, marked incomplete.
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace");
    let spin = workload("spin");
    let mut rec = Command::new(uniplay())
        .args(["record", "--quiet", "-o"])
        .arg(&trace)
        .arg("--")
        .arg(&spin)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    rec.kill().unwrap();
    rec.wait().unwrap();
    let _ = Command::new("pkill")
        .args(["-9", "-f", spin.to_str().unwrap()])
        .status();
    let t = tracelog::Trace::open(&trace).unwrap();
    assert!(
        matches!(t.state(), TraceState::Incomplete { .. }),
        "{:?}",
        t.state()
    );
    let n = t.events().filter(|e| e.is_ok()).count();
    assert!(n > 100, "only {n} events readable after kill -9");
}
