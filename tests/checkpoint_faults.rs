//! Checkpoints under fire: processes forking, exec'ing and exiting while the
//! tree is being cut, threads born while others are stopped, and the
//! recorder killed mid-run (the target must keep running, untraced).

mod support;

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use support::*;
use tracelog::TraceState;

#[test]
fn checkpoint_faults_fork_exec_storm() {
    if !can_record() {
        return;
    }
    let _g = serial();
    // Short-lived processes and threads, checkpointed every 10 ms.
    let r = record(
        &["--epoch", "10ms"],
        &["sh", "-c", "for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do /bin/true; echo $i >/dev/null & done; wait"],
    );
    assert_eq!(r.code(), Some(0), "stderr: {}", r.stderr());
    assert_complete(&r);
    let t = r.open();
    assert!(
        t.checkpoints().len() >= 3,
        "{} checkpoints",
        t.checkpoints().len()
    );
    assert!(
        t.checkpoint_damage().is_empty(),
        "{:?}",
        t.checkpoint_damage()
    );

    let bin = workload("threads");
    let r = record(&["--epoch", "5ms"], &[bin.to_str().unwrap()]);
    assert_eq!(r.code(), Some(0), "stderr: {}", r.stderr());
    assert_complete(&r);
}

fn state_of(pid: u32) -> (String, u32) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |n: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(n))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    (field("State:"), field("TracerPid:").parse().unwrap_or(0))
}

#[test]
fn checkpoint_faults_recorder_killed() {
    if !can_record() {
        return;
    }
    let _g = serial();
    let mut target = KillOnDrop(
        Command::new(workload("spin"))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(100));
    let pid = target.id();
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace");
    for round in 0..3 {
        let mut rec = Command::new(uniplay())
            .args([
                "record",
                "--quiet",
                "--force",
                "--epoch",
                "5ms",
                "--pid",
                &pid.to_string(),
                "-o",
            ])
            .arg(&trace)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Kill it at different moments, likely inside a checkpoint, once
        // it has written something (its start-up can take longer than the
        // sleep on a loaded machine).
        std::thread::sleep(Duration::from_millis(300 + round * 37));
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_secs(5)
            && !tracelog::Trace::open(&trace).is_ok_and(|t| t.events().any(|e| e.is_ok()))
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        rec.kill().unwrap();
        rec.wait().unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let (state, tracer) = state_of(pid);
        assert_eq!(tracer, 0, "target still traced after the recorder died");
        assert!(
            state.starts_with('S') || state.starts_with('R'),
            "target left in state {state}"
        );
        assert!(
            target.try_wait().unwrap().is_none(),
            "target died with the recorder"
        );
        let t = tracelog::Trace::open(&trace).unwrap();
        assert!(matches!(t.state(), TraceState::Incomplete { .. }));
        assert!(t.events().filter(|e| e.is_ok()).count() > 0);
    }
    // No snapshot copy of the target is left running (copies that exited
    // may wait as zombies for the target's parent, this test, to reap them;
    // one killed a moment ago may still be on its way out).
    let running = || {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
            .filter(|st| {
                st.contains("(workload-spin)") && !st.contains(") Z ") && !st.contains(") X ")
            })
            .count()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    let mut n = running();
    while n != 1 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        n = running();
    }
    target.kill().unwrap();
    target.wait().unwrap();
    assert_eq!(n, 1, "snapshot children survived the recorder");
}
