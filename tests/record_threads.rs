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
