//! Restoring checkpoints: a process rebuilt from checkpoint k must equal
//! checkpoint k exactly (registers, FPU, memory map, memory), a change made
//! to it must show up as exactly that difference, and a restored process
//! must run on from the cut to the end the recorded one reached.

mod support;

use nix::{
    sys::{ptrace, signal::Signal, wait::WaitStatus},
    unistd::Pid,
};
use replay::{compare, restore, Difference};
use support::*;

/// Restores every checkpoint of `r`'s root process and compares it with
/// itself; returns how many were checked.
fn restore_all(r: &Recording) -> usize {
    let t = r.open();
    let root = t.meta().root_pid;
    let cps = t.checkpoints();
    assert!(!cps.is_empty(), "no checkpoints; stderr: {}", r.stderr());
    let mut checked = 0;
    for cp in &cps {
        let state = t.checkpoint(cp.epoch).unwrap();
        if !state.processes.iter().any(|p| p.pid == root) {
            continue;
        }
        let live = restore(&t, cp.epoch, root, Some(0))
            .unwrap_or_else(|e| panic!("restore of checkpoint {}: {e}", cp.epoch));
        let threads = state.processes.iter().find(|p| p.pid == root).unwrap();
        assert_eq!(live.tids.len(), threads.threads.len());
        let diff = compare(&t, cp.epoch, root, &live, &[]).unwrap();
        assert!(
            diff.is_empty(),
            "checkpoint {}: {} differences: {}",
            cp.epoch,
            diff.len(),
            diff.iter()
                .take(20)
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        );
        live.kill();
        checked += 1;
    }
    checked
}

/// Resumes every thread of `live` and waits for the process to exit;
/// returns its exit code.
fn run_to_exit(live: &replay::Restored) -> i32 {
    for &tid in live.live_tids() {
        ptrace::cont(Pid::from_raw(tid as i32), None).unwrap();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut running: Vec<u32> = live.live_tids().to_vec();
    // Threads before the leader: the leader is reaped last.
    running.reverse();
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "restored process did not exit"
        );
        let mut idle = true;
        for tid in running.clone() {
            let st = nix::sys::wait::waitpid(
                Pid::from_raw(tid as i32),
                Some(nix::sys::wait::WaitPidFlag::__WALL | nix::sys::wait::WaitPidFlag::WNOHANG),
            )
            .unwrap();
            match st {
                WaitStatus::StillAlive => continue,
                WaitStatus::Exited(_, code) if tid == live.pid => return code,
                WaitStatus::Signaled(_, sig, _) if tid == live.pid => {
                    panic!("restored process killed by {sig:?}")
                }
                WaitStatus::Exited(..) | WaitStatus::Signaled(..) => running.retain(|&t| t != tid),
                WaitStatus::Stopped(p, sig) => {
                    assert!(
                        !matches!(sig, Signal::SIGSEGV | Signal::SIGBUS | Signal::SIGILL),
                        "restored thread {p} got {sig:?}"
                    );
                    ptrace::cont(p, Some(sig)).unwrap();
                }
                WaitStatus::PtraceEvent(p, _, ev) => {
                    if ev == libc::PTRACE_EVENT_CLONE {
                        // The new thread is traced too and reports its own stop.
                        running.insert(0, ptrace::getevent(p).unwrap() as u32);
                    }
                    ptrace::cont(p, None).unwrap();
                }
                WaitStatus::PtraceSyscall(p) => ptrace::cont(p, None).unwrap(),
                _ => {}
            }
            idle = false;
        }
        if idle {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
}

#[test]
fn replay_restore_single_threaded_checkpoints() {
    if !can_record() {
        return;
    }
    let _g = serial();
    let bin = workload("patterns");
    let r = record(&["--epoch", "100ms"], &[bin.to_str().unwrap(), "3", "200"]);
    assert_eq!(r.code(), Some(0), "stderr: {}", r.stderr());
    let n = restore_all(&r);
    assert!(n >= 4, "only {n} checkpoints restored");
}

#[test]
fn replay_restore_multi_threaded_checkpoints() {
    if !can_record() {
        return;
    }
    let _g = serial();
    let bin = workload("threads");
    let r = record(&["--epoch", "50ms"], &[bin.to_str().unwrap()]);
    assert_eq!(r.code(), Some(0), "stderr: {}", r.stderr());
    let t = r.open();
    let root = t.meta().root_pid;
    let multi = t
        .checkpoints()
        .iter()
        .filter(|c| {
            t.checkpoint(c.epoch)
                .unwrap()
                .processes
                .iter()
                .any(|p| p.pid == root && p.threads.len() > 1)
        })
        .count();
    assert!(multi >= 1, "no checkpoint caught the threads running");
    assert!(restore_all(&r) >= 2);
}

#[test]
fn replay_restore_reports_changes() {
    if !can_record() {
        return;
    }
    let _g = serial();
    let bin = workload("patterns");
    let r = record(&["--epoch", "100ms"], &[bin.to_str().unwrap(), "2", "200"]);
    assert_eq!(r.code(), Some(0), "stderr: {}", r.stderr());
    let t = r.open();
    let root = t.meta().root_pid;
    let epoch = t.checkpoints().last().unwrap().epoch;
    let mut live = restore(&t, epoch, root, None).unwrap();
    let image = t.checkpoint_memory(epoch, root).unwrap();
    // A stored page: flip one byte in the middle of it.
    let (&page, data) = image.iter().find(|(_, d)| d[100] != 0xff).unwrap();
    live.write_memory(page + 100, &[data[100] ^ 0xff]).unwrap();
    // A register of the first thread.
    let (&rec_tid, &tid) = live.tids.iter().next().unwrap();
    let p = Pid::from_raw(tid as i32);
    let mut regs = ptrace::getregs(p).unwrap();
    let old_rbx = regs.rbx;
    regs.rbx ^= 0x5a5a;
    ptrace::setregs(p, regs).unwrap();

    let diff = compare(&t, epoch, root, &live, &[]).unwrap();
    assert_eq!(
        diff[..1],
        [Difference::Register {
            tid: rec_tid,
            name: "rbx",
            expected: old_rbx,
            actual: old_rbx ^ 0x5a5a,
        },]
    );
    match &diff[1] {
        Difference::Page {
            addr,
            first_byte,
            expected,
            actual,
        } => {
            assert_eq!((*addr, *first_byte), (page, page + 100));
            assert_ne!(expected, actual);
        }
        other => panic!("expected a page difference, got {other}"),
    }
    assert_eq!(diff.len(), 2, "{diff:?}");
    // Ignoring that byte leaves only the register.
    let diff = compare(&t, epoch, root, &live, &[(page + 100, page + 101)]).unwrap();
    assert_eq!(diff.len(), 1, "{diff:?}");

    // An injected syscall runs in the restored process and leaves the
    // thread's registers as they were.
    let got = live.inject(tid, libc::SYS_getpid as u64, [0; 6]).unwrap();
    assert_eq!(got, live.pid as i64);
    assert_eq!(ptrace::getregs(p).unwrap().rbx, old_rbx ^ 0x5a5a);
    let bad = live.inject(tid, libc::SYS_close as u64, [12345, 0, 0, 0, 0, 0]);
    assert_eq!(bad.unwrap(), -(libc::EBADF as i64));
}

#[test]
fn replay_restored_processes_run_to_their_end() {
    if !can_record() {
        return;
    }
    let _g = serial();
    // Single-threaded, caught in nanosleep (-ERESTART_RESTARTBLOCK) or
    // between phases: it must finish its phases and check its memory.
    let bin = workload("patterns");
    let r = record(&["--epoch", "100ms"], &[bin.to_str().unwrap(), "3", "200"]);
    assert_eq!(r.code(), Some(0), "stderr: {}", r.stderr());
    let t = r.open();
    let root = t.meta().root_pid;
    for cp in t.checkpoints().iter().skip(1) {
        let live = restore(&t, cp.epoch, root, None).unwrap();
        assert_eq!(run_to_exit(&live), 0, "from checkpoint {}", cp.epoch);
    }
    // Multi-threaded, caught in futex waits: the threads must finish their
    // rounds and be joined.
    let bin = workload("threads");
    let r = record(&["--epoch", "50ms"], &[bin.to_str().unwrap()]);
    assert_eq!(r.code(), Some(0), "stderr: {}", r.stderr());
    let t = r.open();
    let root = t.meta().root_pid;
    for cp in t.checkpoints().iter() {
        let live = restore(&t, cp.epoch, root, None).unwrap();
        assert_eq!(run_to_exit(&live), 0, "from checkpoint {}", cp.epoch);
    }
}
