//! `record --pid`: attach to a process that is already running, and stop on
//! its exit or on SIGINT/SIGTERM with a finalised trace.

mod support;

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use support::*;
use tracelog::{EventKind, TraceState};

fn spawn_spinner() -> std::process::Child {
    let (child, line) = spawn_until_line(&mut Command::new(workload("spin")));
    assert_eq!(line.trim(), "ready");
    child
}

#[test]
fn record_attach_until_target_exits() {
    if !can_record() {
        return;
    }
    let _g = serial();
    let mut target = spawn_spinner();
    let pid = target.id();
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace");
    let rec = Command::new(uniplay())
        .args(["record", "--quiet", "--pid", &pid.to_string(), "-o"])
        .arg(&trace)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until_recording(&trace, Duration::from_millis(800));
    target.kill().unwrap();
    target.wait().unwrap();
    let out = rec.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = tracelog::Trace::open(&trace).unwrap();
    assert_eq!(t.state(), TraceState::Complete);
    assert_eq!(t.meta().mode, "attach");
    assert_eq!(t.meta().root_pid, pid);
    let ev: Vec<_> = t.events().collect::<Result<_, _>>().unwrap();
    let getppid = syscalls(&ev, "getppid");
    assert!(
        getppid.len() > 50,
        "only {} getppid calls in 0.8 s",
        getppid.len()
    );
    assert!(getppid.iter().all(|(e, _)| e.pid == pid));
    // Killed with SIGKILL: the exit says so.
    let exit = ev.iter().rev().find_map(|e| match e.kind {
        EventKind::Exit {
            signal,
            group_dead: true,
            ..
        } => Some(signal),
        _ => None,
    });
    assert_eq!(exit, Some(9));
}

#[test]
fn record_attach_stops_on_sigint() {
    if !can_record() {
        return;
    }
    let _g = serial();
    let mut target = spawn_spinner();
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace");
    let rec = Command::new(uniplay())
        .args(["record", "--quiet", "--pid", &target.id().to_string(), "-o"])
        .arg(&trace)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until_recording(&trace, Duration::from_millis(500));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(rec.id() as i32),
        nix::sys::signal::SIGINT,
    )
    .unwrap();
    let out = rec.wait_with_output().unwrap();
    // The target keeps running, untouched.
    assert!(
        target.try_wait().unwrap().is_none(),
        "target died when recording stopped"
    );
    target.kill().unwrap();
    target.wait().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = tracelog::Trace::open(&trace).unwrap();
    assert_eq!(t.state(), TraceState::Complete);
    assert!(
        t.meta().end_reason.contains("SIGINT"),
        "{}",
        t.meta().end_reason
    );
    assert!(t.events().count() > 20);
}
