//! Checkpoints hold the memory the target had at each cut: a workload
//! writes known patterns into heap, stack, an anonymous shared mapping and
//! a private one it drops in phase 2, phase by phase; every checkpoint must
//! show the phase done before it, whether memory is captured by fork or by
//! write tracking.

mod support;

use support::*;
use tracelog::EventKind;

#[test]
fn checkpoint_memory_matches_what_was_written() {
    check_patterns("never", "fork");
}

#[test]
fn checkpoint_memory_with_write_tracking() {
    check_patterns("always", "tracked");
}

/// Records the patterns workload with `--track-writes track` and checks
/// every checkpoint cleanly between phases; some later checkpoint must
/// have captured memory as `memory` says.
fn check_patterns(track: &str, memory: &str) {
    if !can_record() {
        return;
    }
    let _g = serial();
    let bin = workload("patterns");
    let r = record(
        &["--epoch", "100ms", "--track-writes", track],
        &[bin.to_str().unwrap(), "3", "400"],
    );
    assert_eq!(r.code(), Some(0), "stderr: {}", r.stderr());
    assert_complete(&r);
    let out = r.stdout();
    let f: Vec<&str> = out.split_whitespace().collect();
    let addr = |i: usize| u64::from_str_radix(f[i].trim_start_matches("0x"), 16).unwrap();
    let (heap, stack, shared, zap) = (addr(1), addr(3), addr(5), addr(9));
    let size: u64 = f[7].parse().unwrap();

    let t = r.open();
    let ev = r.events();
    let root = t.meta().root_pid;
    // When each phase was finished: its "phase N" write to stderr.
    let marks: Vec<(u64, u8)> = syscalls(&ev, "write")
        .iter()
        .filter(|(e, s)| e.pid == root && s.args.as_slice()[0] == 2)
        .enumerate()
        .map(|(i, (e, _))| (e.time_ns, i as u8 + 1))
        .collect();
    assert_eq!(marks.len(), 3);
    let cps = t.checkpoints();
    assert!(
        cps.len() >= 6,
        "only {} checkpoints in ~1.2 s at 100 ms epochs",
        cps.len()
    );
    let mut checked = 0;
    for cp in &cps {
        let phase = marks
            .iter()
            .rev()
            .find(|(t, _)| *t < cp.time_ns)
            .map(|m| m.1);
        let Some(phase) = phase else { continue };
        // Skip cuts that fell inside a phase's memset (before its mark but
        // after the previous one, the regions are mixed).
        let next = marks.iter().find(|(t, _)| *t > cp.time_ns);
        if next.is_some_and(|(t, _)| t - cp.time_ns < 350_000_000) && phase < 3 {
            continue;
        }
        let mem = t.checkpoint_memory(cp.epoch, root).unwrap();
        // Dropped pages read as zeros: stored as such, or absent.
        let zero = [0u8; 4096];
        let want = if phase == 2 { 0 } else { phase };
        for page in (zap..zap + size).step_by(4096) {
            let data = mem.get(&page).map_or(&zero[..], |p| &p[..]);
            assert!(
                data.iter().all(|&b| b == want),
                "epoch {}: private page {page:#x} is not {want} (phase {phase})",
                cp.epoch
            );
        }
        for (name, base) in [("heap", heap), ("stack", stack), ("shared", shared)] {
            for page in (base..base + size)
                .step_by(4096)
                .map(|a| a & !4095)
                .filter(|a| *a >= base)
            {
                let data = mem
                    .get(&page)
                    .unwrap_or_else(|| panic!("epoch {}: {name} page {page:#x} missing", cp.epoch));
                assert!(
                    data.iter().all(|&b| b == phase),
                    "epoch {}: {name} page {page:#x} is not phase {phase}",
                    cp.epoch
                );
            }
        }
        checked += 1;
    }
    assert!(
        checked >= 3,
        "only {checked} checkpoints fell cleanly between phases"
    );
    // Each event belongs to exactly one epoch, in order.
    let mut last = 0;
    for e in &ev {
        assert!(e.epoch >= last, "epoch goes backwards at seq {}", e.seq);
        last = e.epoch;
        if let EventKind::EpochMark { epoch } = e.kind {
            assert_eq!(e.epoch, epoch);
        }
    }
    let how: Vec<String> = cps
        .iter()
        .map(|c| {
            let cp = t.checkpoint(c.epoch).unwrap();
            cp.processes
                .iter()
                .find(|p| p.pid == root)
                .map_or_else(String::new, |p| p.memory.clone())
        })
        .collect();
    assert!(
        how.iter().skip(1).any(|m| m == memory),
        "no later checkpoint captured memory by {memory}: {how:?}"
    );
    // Only changed pages are stored after the first checkpoint.
    let later: Vec<_> = cps.iter().skip(1).collect();
    assert!(
        later.iter().any(|c| c.pages < cps[0].pages / 4),
        "later checkpoints store everything again"
    );
}

#[test]
fn checkpoint_threads_and_processes_all_present() {
    if !can_record() {
        return;
    }
    let _g = serial();
    let bin = workload("threads");
    let r = record(&["--epoch", "20ms"], &[bin.to_str().unwrap()]);
    assert_eq!(r.code(), Some(0), "stderr: {}", r.stderr());
    let t = r.open();
    let cps = t.checkpoints();
    assert!(!cps.is_empty());
    let mut multi = 0;
    for info in &cps {
        let cp = t.checkpoint(info.epoch).unwrap();
        for p in &cp.processes {
            let live =
                std::collections::HashSet::<u32>::from_iter(p.threads.iter().map(|th| th.tid));
            assert_eq!(live.len(), p.threads.len());
            for th in &p.threads {
                assert_eq!(th.regs.len(), 27, "tid {} regs", th.tid);
                assert!(th.regs[16] != 0, "tid {} has no rip", th.tid);
                assert!(th.fpregs.len() >= 512, "tid {} has no FPU state", th.tid);
            }
            if p.threads.len() > 1 {
                multi += 1;
            }
            assert!(p.maps.iter().any(|m| m.path == "[stack]"));
            assert!(
                p.maps.iter().any(|m| m.file.is_some()),
                "mapped files not copied"
            );
        }
    }
    assert!(multi > 0, "no checkpoint caught the worker threads");

    // Several processes: a shell pipeline.
    let r = record(
        &["--epoch", "50ms"],
        &["sh", "-c", "sleep 0.3 | cat; sleep 0.2"],
    );
    assert_eq!(r.code(), Some(0), "stderr: {}", r.stderr());
    let t = r.open();
    let most = t
        .checkpoints()
        .iter()
        .map(|i| t.checkpoint(i.epoch).unwrap().processes.len())
        .max()
        .unwrap_or(0);
    assert!(most >= 2, "no checkpoint holds several processes");
}

/// A process stopped by SIGSTOP cannot be made to run anything: its
/// memory is read while it is stopped, and its signal handlers are the
/// ones read at an earlier checkpoint (its caught set unchanged).
#[test]
fn checkpoint_handlers_of_a_stopped_process() {
    if !can_record() {
        return;
    }
    let _g = serial();
    let script = "import os, signal, time\n\
                  signal.signal(signal.SIGUSR1, lambda *a: None)\n\
                  time.sleep(0.2)\n\
                  if os.fork() == 0:\n    time.sleep(0.4); os.kill(os.getppid(), signal.SIGCONT); os._exit(0)\n\
                  os.kill(os.getpid(), signal.SIGSTOP)\n\
                  os.wait(); print('ok')";
    // Without write tracking, a stopped process's memory is read while
    // stopped ("stopped"), which tells the checkpoints that caught it.
    let r = record(
        &["--epoch", "50ms", "--track-writes", "never"],
        &["/usr/bin/python3", "-c", script],
    );
    assert_eq!(r.code(), Some(0), "stderr: {}", r.stderr());
    let t = r.open();
    let root = t.meta().root_pid;
    let states: Vec<(String, bool)> = t
        .checkpoints()
        .iter()
        .filter_map(|c| {
            let cp = t.checkpoint(c.epoch).unwrap();
            let p = cp.processes.into_iter().find(|p| p.pid == root)?;
            let usr1 = p.sigactions.iter().any(|a| a.sig == 10 && a.handler > 1);
            Some((p.memory, usr1))
        })
        .collect();
    // (python puts the default handlers back as it exits: the last
    // checkpoints may rightly have none.)
    assert!(
        states.iter().any(|s| s.0 == "stopped"),
        "no checkpoint caught the process stopped: {states:?}"
    );
    assert!(
        states.iter().filter(|s| s.0 == "stopped").all(|s| s.1),
        "a checkpoint of the stopped process lost its handler: {states:?}"
    );
}
