//! Real programs nobody here wrote, recorded without loss, with what they
//! read visible in the trace.

mod support;

use support::*;
use tracelog::EventKind;

fn check(cmd: &[&str]) -> Recording {
    let r = record(&[], cmd);
    assert_eq!(r.code(), Some(0), "{cmd:?}: stderr: {}", r.stderr());
    assert_complete(&r);
    r
}

#[test]
fn record_real_coreutils_and_compressors() {
    if !can_record() {
        return;
    }
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.txt");
    let text: String = (0..5000)
        .map(|i| format!("line {} {}\n", i * 7919 % 5000, "x".repeat(i % 50)))
        .collect();
    std::fs::write(&input, &text).unwrap();
    let input = input.to_str().unwrap();

    // cat: every byte of the file comes back through read outputs.
    let r = check(&["cat", input]);
    assert!(r.stdout() == text, "cat output differs");
    let ev = r.events();
    // cat opens its input last, then reads it to the end.
    let (open, fd) = syscalls(&ev, "openat")
        .iter()
        .rev()
        .find(|(_, s)| s.ret >= 0)
        .map(|(e, s)| (e.seq, s.ret as u64))
        .unwrap();
    let read_back: Vec<u8> = syscalls(&ev, "read")
        .iter()
        .filter(|(e, s)| e.seq > open && s.ret > 0 && s.args.as_slice()[0] == fd)
        .flat_map(|(_, s)| s.outputs[0].data.to_vec())
        .collect();
    assert!(
        read_back == text.as_bytes(),
        "read outputs differ from the file ({} vs {} bytes)",
        read_back.len(),
        text.len()
    );

    for cmd in [
        vec!["sort", input],
        vec!["sha256sum", input],
        vec!["ls", "-la", "/usr/bin"],
        vec!["zstd", "-q", "-c", input],
        vec!["xz", "-c", input],
        vec!["sh", "-c", "ls / | wc -l"],
    ] {
        let r = check(&cmd);
        let ev = r.events();
        assert!(
            ev.iter().any(|e| matches!(e.kind, EventKind::Exec { .. })),
            "{cmd:?}: no exec"
        );
        assert!(
            !syscalls(&ev, "exit_group").is_empty(),
            "{cmd:?}: no exit_group"
        );
    }
}

#[test]
fn record_real_python_and_sqlite() {
    if !can_record() {
        return;
    }
    let _g = serial();
    let r = check(&["python3", "-c", "import json, hashlib, threading\nt=[threading.Thread(target=lambda: hashlib.sha256(b'x'*10**6).hexdigest()) for _ in range(4)]\n[x.start() for x in t]\n[x.join() for x in t]\nprint(json.dumps({'ok': True}))"]);
    assert_eq!(r.stdout().trim(), "{\"ok\": true}");
    let ev = r.events();
    let threads: std::collections::HashSet<u32> = ev.iter().map(|e| e.tid).collect();
    assert!(threads.len() >= 5, "python threads: {}", threads.len());

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let r = check(&[
        "sqlite3",
        db.to_str().unwrap(),
        "create table t(a); insert into t values (1),(2),(3); select sum(a) from t;",
    ]);
    assert_eq!(r.stdout().trim(), "6");
    assert!(
        !syscalls(&r.events(), "pwrite64").is_empty() || !syscalls(&r.events(), "write").is_empty()
    );

    // Netlink dumps: iproute2 peeks at each message's length with
    // MSG_PEEK | MSG_TRUNC and an empty buffer (recvmsg returns more than
    // it wrote), which must not count as an incomplete copy.
    let r = check(&["ip", "addr"]);
    assert!(r.stdout().contains("lo"), "{}", r.stdout());
    let events = r.events();
    assert!(!syscalls(&events, "recvmsg").is_empty());
}

/// Recording must not change what a program sees of its machine: the
/// recorder keeps a starting process on one CPU while ld.so reads `cpuid`,
/// but gives its CPUs back before the first call that could see the pin
/// (`nproc` printed 1 on 2 CPUs; lld sized its thread pool while pinned
/// and again after, and crashed).
#[test]
fn record_real_programs_see_every_cpu() {
    if !can_record() {
        return;
    }
    let _g = serial();
    let native = std::process::Command::new("nproc").output().unwrap();
    let native = String::from_utf8_lossy(&native.stdout).trim().to_string();
    let r = check(&[
        "bash",
        "-c",
        "nproc; nproc; python3 -c 'import os; print(len(os.sched_getaffinity(0)))'",
    ]);
    let seen: Vec<String> = r.stdout().lines().map(str::to_string).collect();
    assert_eq!(
        seen,
        [native.clone(), native.clone(), native],
        "stderr: {}",
        r.stderr()
    );
}
