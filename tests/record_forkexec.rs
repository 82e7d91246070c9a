//! A process that forks and execs: the child is in the trace from its first
//! syscall (it joins the filter in the kernel before it runs), with its exec.

mod support;

use support::*;
use tracelog::{EventKind, SYSCALL_ENTER_UNSEEN};

#[test]
fn record_fork_exec_child_from_first_syscall() {
    if !can_record() {
        return;
    }
    let _g = serial();
    let bin = workload("forkexec");
    let r = record(
        &[],
        &[
            bin.to_str().unwrap(),
            "sh",
            "-c",
            "echo child-says-hi; exit 7",
        ],
    );
    assert_eq!(
        r.code(),
        Some(7),
        "uniplay exits with the command's status; stderr: {}",
        r.stderr()
    );
    assert!(r.stdout().contains("child-says-hi"));
    assert_complete(&r);
    let ev = r.events();
    let m = r.open().meta().clone();
    assert_eq!(m.exit.as_ref().map(|x| x.code), Some(7));

    // Launch mode starts at the workload's own exec.
    let EventKind::Exec { path, argv } = &ev[0].kind else {
        panic!("first event is {:?}", ev[0].kind)
    };
    assert!(path.ends_with("workload-forkexec"), "{path}");
    assert_eq!(argv[1..], ["sh", "-c", "echo child-says-hi; exit 7"]);

    let (fork_at, child) = ev
        .iter()
        .enumerate()
        .find_map(|(i, e)| match e.kind {
            EventKind::Fork { child_pid, .. } if e.pid == m.root_pid => Some((i, child_pid)),
            _ => None,
        })
        .expect("fork event");
    let child_events: Vec<_> = ev
        .iter()
        .enumerate()
        .filter(|(_, e)| e.pid == child)
        .collect();
    let (first_i, first) = child_events
        .iter()
        .find(|(_, e)| matches!(e.kind, EventKind::Syscall(_)))
        .expect("child has syscalls");
    assert!(*first_i > fork_at, "child event before its fork");
    // Entered and exited under recording: nothing of the child was missed.
    // Its first event is its side of the fork: the clone returning 0.
    match &first.kind {
        EventKind::Syscall(s) => {
            let name = recorder_common::name(s.nr);
            assert!(
                matches!(name, Some("clone" | "clone3" | "fork" | "vfork")),
                "child starts with {name:?}"
            );
            assert_eq!(s.ret, 0);
            assert_eq!(s.flags & SYSCALL_ENTER_UNSEEN, 0);
        }
        other => panic!("child's first event is {other:?}"),
    }
    // And no later syscall of the child was entered unseen either.
    for (_, e) in &child_events {
        if let EventKind::Syscall(s) = &e.kind {
            assert_eq!(
                s.flags & SYSCALL_ENTER_UNSEEN,
                0,
                "child syscall {} entered unseen",
                s.nr
            );
        }
    }
    assert!(child_events.iter().any(|(_, e)| matches!(&e.kind, EventKind::Exec { argv, .. } if argv.first().map(String::as_str) == Some("sh"))));
    let exit = child_events.iter().rev().find_map(|(_, e)| match e.kind {
        EventKind::Exit {
            code,
            group_dead: true,
            ..
        } => Some(code),
        _ => None,
    });
    assert_eq!(exit, Some(7), "child's exit code");
    assert!(m.pids.contains(&child));
}
