//! Threads contending a mutex and a condition variable: the futex operations
//! that order them must be in the trace, from every thread, consistently.

mod support;

use std::collections::{HashMap, HashSet};

use support::*;
use tracelog::EventKind;

const FUTEX_WAIT: u64 = 0;
const FUTEX_WAKE: u64 = 1;
const FUTEX_CMD_MASK: u64 = 0x7f & !0x80; // drop FUTEX_PRIVATE_FLAG (128)

#[test]
fn record_threads_futex_order() {
    if !can_record() {
        return;
    }
    let _g = serial();
    let bin = workload("threads");
    let r = record(&[], &[bin.to_str().unwrap()]);
    assert_eq!(r.code(), Some(0), "stderr: {}", r.stderr());
    assert_complete(&r);
    let ev = r.events();

    // Four workers plus the main thread, each created by a recorded clone.
    let clones: Vec<u32> = ev
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::Fork { child_tid, .. } => Some(child_tid),
            _ => None,
        })
        .collect();
    assert_eq!(clones.len(), 4, "expected 4 thread creations");
    let futex = syscalls(&ev, "futex");
    assert!(
        futex.len() > 100,
        "only {} futex calls for 8000 contended rounds",
        futex.len()
    );
    let tids: HashSet<u32> = futex.iter().map(|(e, _)| e.tid).collect();
    for t in &clones {
        assert!(tids.contains(t), "thread {t} has no futex events");
    }

    // Consistency: every wait and wake is on an address some other op also
    // uses (the mutex or condvar words), wakes never report more woken
    // threads than exist, and events are in time order with seq.
    let mut by_addr: HashMap<u64, (u32, u32)> = HashMap::new();
    for (_, s) in &futex {
        let a = s.args.as_slice();
        let op = a[1] & FUTEX_CMD_MASK;
        let entry = by_addr.entry(a[0]).or_default();
        match op {
            FUTEX_WAIT | 9 /* WAIT_BITSET */ => entry.0 += 1,
            FUTEX_WAKE | 10 /* WAKE_BITSET */ => {
                entry.1 += 1;
                assert!((0..=5).contains(&s.ret), "wake woke {} threads", s.ret);
            }
            _ => {}
        }
    }
    assert!(
        by_addr.values().any(|(w, k)| *w > 0 && *k > 0),
        "no address is both waited on and woken"
    );
    for w in ev.windows(2) {
        assert!(w[1].seq == w[0].seq + 1);
    }
    let mut last = HashMap::new();
    for e in &ev {
        if let EventKind::Syscall(s) = &e.kind {
            assert!(s.enter_ns <= e.time_ns, "syscall exits before it enters");
            let prev = last.insert(e.tid, e.time_ns).unwrap_or(0);
            assert!(prev <= e.time_ns, "thread {} goes back in time", e.tid);
        }
    }
}

/// The order of libc's lock calls: once a process has a second thread, its
/// threads' entries into pthread_mutex_lock/unlock and the condition
/// variable calls are recorded (function, object, where it is in the
/// process), from every worker, none before the first thread creation;
/// `--no-sync-order` records none.
#[test]
fn record_threads_sync_order() {
    if !can_record() {
        return;
    }
    let _g = serial();
    let bin = workload("mild_threads");
    let r = record(&[], &[bin.to_str().unwrap()]);
    assert_eq!(r.code(), Some(0), "stderr: {}", r.stderr());
    assert_complete(&r);
    let ev = r.events();
    let first_clone = ev
        .iter()
        .position(|e| matches!(e.kind, EventKind::Fork { .. }))
        .expect("a thread creation");
    let name = |op| recorder_common::sync_name(op).unwrap_or("?");
    let mut calls: HashMap<(u32, &str), u32> = HashMap::new();
    let mut lock_at: HashMap<(u64, u64), u32> = HashMap::new();
    for (i, e) in ev.iter().enumerate() {
        if let EventKind::Sync { op, ip, object } = e.kind {
            assert!(
                i > first_clone,
                "a sync call before the process had threads"
            );
            *calls.entry((e.tid, name(op))).or_default() += 1;
            if name(op) == "pthread_mutex_lock" {
                *lock_at.entry((ip, object)).or_default() += 1;
            }
        }
    }
    // Four workers, 40 rounds each: lock, signal, unlock.
    let workers: HashSet<u32> = calls
        .iter()
        .filter(|((_, f), &n)| *f == "pthread_mutex_lock" && n >= 40)
        .map(|((t, _), _)| *t)
        .collect();
    assert_eq!(workers.len(), 4, "lock calls per thread: {calls:?}");
    for &t in &workers {
        assert!(calls
            .get(&(t, "pthread_cond_signal"))
            .is_some_and(|&n| n >= 40));
        assert!(calls
            .get(&(t, "pthread_mutex_unlock"))
            .is_some_and(|&n| n >= 40));
    }
    // The program's one mutex, taken 160 times by the workers and by main
    // (libc takes a few of its own).
    let busy: Vec<_> = lock_at.iter().filter(|(_, &n)| n >= 160).collect();
    assert_eq!(busy.len(), 1, "{lock_at:?}");

    // Linux 6.6 has multi-uprobe links (one per process and library).
    let probes = r.open().meta().sync_probes.clone();
    if kernel_at_least(6, 6) {
        assert_eq!(probes, "multi-uprobe links");
    } else {
        assert!(probes.starts_with("uprobes"), "{probes}");
    }

    let off = record(&["--no-sync-order"], &[bin.to_str().unwrap()]);
    assert_eq!(off.code(), Some(0), "stderr: {}", off.stderr());
    assert!(!off
        .events()
        .iter()
        .any(|e| matches!(e.kind, EventKind::Sync { .. })));
    assert_eq!(off.open().meta().sync_probes, "off (--no-sync-order)");
}

/// Without multi-uprobe links (kernels before 6.6; forced here), one
/// uprobe per function records the same calls.
#[test]
fn record_threads_sync_order_one_uprobe_per_function() {
    if !can_record() {
        return;
    }
    let _g = serial();
    let bin = workload("mild_threads");
    let r = record_with_env(
        &[("UNIPLAY_NO_MULTI_UPROBE", "1")],
        &[],
        &[bin.to_str().unwrap()],
    );
    assert_eq!(r.code(), Some(0), "stderr: {}", r.stderr());
    assert_complete(&r);
    let probes = r.open().meta().sync_probes.clone();
    assert!(probes.starts_with("uprobes, one per function"), "{probes}");
    let signals = r
        .events()
        .iter()
        .filter(|e| {
            matches!(e.kind, EventKind::Sync { op, .. }
                if recorder_common::sync_name(op) == Some("pthread_cond_signal"))
        })
        .count();
    // Four workers, 40 rounds each, one signal per round.
    assert_eq!(signals, 160);
}

fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release
        .trim()
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (a, b) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (a, b) >= (major, minor)
}
