//! A recorder that dies without `finish` leaves a readable trace whose state
//! says so.

mod support;

use std::process::Command;

use support::*;
use tracelog::{Meta, Trace, TraceState, TraceWriter};

const CHILD_ENV: &str = "TRACELOG_TEST_CHILD_DIR";

/// Run as a child process by `killed_process_leaves_flushed_events`: writes,
/// flushes, pushes more, then dies like `kill -9` would leave it (no Drop,
/// no finish). Does nothing in a normal test run.
#[test]
fn child_writer_that_aborts() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let mut w = TraceWriter::create(dir.as_ref(), meta(), instant_flush()).unwrap();
    for e in synthetic(1000, 21) {
        w.push(e).unwrap();
    }
    w.tick().unwrap();
    // tick hands the frame to the background thread; wait until it is written.
    while w.stats().frames < 1 {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    for e in synthetic(50, 22) {
        w.push(e).unwrap();
    }
    std::process::abort();
}

#[test]
fn killed_process_leaves_flushed_events() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("t");
    let status = Command::new(std::env::current_exe().unwrap())
        .args(["child_writer_that_aborts", "--exact", "--nocapture"])
        .env(CHILD_ENV, &d)
        .status()
        .unwrap();
    assert!(!status.success(), "child should have aborted");

    let t = Trace::open(&d).unwrap();
    assert_eq!(t.meta().state, TraceState::Recording);
    assert_eq!(
        t.state(),
        TraceState::Incomplete {
            reason: "recorder stopped without finalising (killed?)".into()
        }
    );
    let (got, err) = drain(t.events());
    assert!(err.is_none(), "{err:?}");
    assert_eq!(got, expected(&synthetic(1000, 21)));
}

#[test]
fn forgotten_writer_is_still_recording() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("t");
    let mut w = TraceWriter::create(&d, meta(), instant_flush()).unwrap();
    let events = synthetic(300, 23);
    for e in &events {
        w.push(e.clone()).unwrap();
    }
    w.sync().unwrap();
    // Leaks the lock fd: to readers this looks like a live recorder.
    std::mem::forget(w);
    let t = Trace::open(&d).unwrap();
    assert_eq!(t.state(), TraceState::Recording);
    assert_eq!(t.state().to_string(), "still recording");
    let (got, err) = drain(t.events());
    assert!(err.is_none());
    assert_eq!(got, expected(&events));
}

#[test]
fn dropped_writer_flushes_and_stays_recording() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("t");
    let mut w = TraceWriter::create(&d, meta(), opts(64)).unwrap();
    let events = synthetic(1000, 24);
    for e in &events {
        w.push(e.clone()).unwrap();
    }
    drop(w);
    assert!(!d.join("index.tlf").exists());
    let t = Trace::open(&d).unwrap();
    assert_eq!(t.meta().state, TraceState::Recording);
    // Another test in this binary forks a child; for the instant between its
    // fork and exec the child shares our descriptors, this lock's included.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while !matches!(t.state(), TraceState::Incomplete { .. })
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(matches!(t.state(), TraceState::Incomplete { .. }));
    let (got, err) = drain(t.events());
    assert!(err.is_none());
    assert_eq!(got, expected(&events));
}

#[test]
fn recording_meta_without_lock_file_is_incomplete() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("t");
    write_trace(&d, &synthetic(10, 25), opts(64));
    // Rewrite the meta as a recorder that never finished would have left it.
    let mut m: Meta = serde_json::from_slice(&std::fs::read(d.join("meta.json")).unwrap()).unwrap();
    m.state = TraceState::Recording;
    std::fs::write(d.join("meta.json"), serde_json::to_vec(&m).unwrap()).unwrap();
    std::fs::remove_file(d.join("lock")).unwrap();
    let t = Trace::open(&d).unwrap();
    assert!(matches!(t.state(), TraceState::Incomplete { .. }));
    assert_eq!(drain(t.events()).0.len(), 10);
}
