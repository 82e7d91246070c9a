//! A workload makes syscalls with known results and prints what it saw; the
//! trace must hold exactly those return values and bytes.

mod support;

use std::collections::HashMap;

use support::*;

fn seen(stdout: &str) -> HashMap<String, String> {
    stdout
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The single output of the only `name` call whose return value is `ret`.
fn output_of(events: &[tracelog::Event], name: &str, ret: i64, arg: u8) -> String {
    let calls: Vec<_> = syscalls(events, name)
        .into_iter()
        .filter(|(_, s)| s.ret == ret)
        .collect();
    assert!(!calls.is_empty(), "no {name} returning {ret}");
    let (_, s) = calls.last().unwrap();
    let out = s
        .outputs
        .iter()
        .find(|o| o.arg == arg)
        .unwrap_or_else(|| panic!("{name} has no output for arg {arg}"));
    assert!(out.complete);
    hex(&out.data)
}

#[test]
fn record_known_results() {
    if !can_record() {
        return;
    }
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("known.txt");
    // Bigger than one chunk (16 KiB) so chunked copies are exercised.
    let content: Vec<u8> = (0..40_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&file, &content).unwrap();
    for i in 0..20 {
        std::fs::write(dir.path().join(format!("entry-{i}")), b"x").unwrap();
    }
    let bin = workload("known");
    let r = record(
        &[],
        &[
            bin.to_str().unwrap(),
            file.to_str().unwrap(),
            dir.path().to_str().unwrap(),
        ],
    );
    assert_eq!(r.code(), Some(0), "stderr: {}", r.stderr());
    assert_complete(&r);
    let s = seen(&r.stdout());
    let ev = r.events();

    let n: i64 = s["read_ret"].parse().unwrap();
    assert_eq!(n, content.len() as i64);
    assert_eq!(output_of(&ev, "read", n, 1), s["read_hex"]);
    let rn: i64 = s["readv_ret"].parse().unwrap();
    assert_eq!(rn, content.len() as i64);
    let readv = syscalls(&ev, "readv");
    let [(_, call)] = readv.as_slice() else {
        panic!("expected one readv, got {}", readv.len());
    };
    assert_eq!(call.ret, rn);
    // One output per iovec, in order, each complete.
    assert_eq!(call.outputs.len(), 3, "{:?}", call.outputs);
    assert!(call.outputs.iter().all(|o| o.arg == 1 && o.complete));
    let joined: Vec<u8> = call.outputs.iter().flat_map(|o| o.data.to_vec()).collect();
    assert_eq!(hex(&joined), s["readv_hex"]);
    assert_eq!(output_of(&ev, "getrandom", 32, 0), s["getrandom_hex"]);
    assert_eq!(output_of(&ev, "clock_gettime", 0, 1), s["clock_hex"]);
    assert_eq!(output_of(&ev, "pipe2", 0, 0), s["pipe_fds"]);
    let pn: i64 = s["pipe_ret"].parse().unwrap();
    assert_eq!(output_of(&ev, "read", pn, 1), s["pipe_hex"]);
    let stat: Vec<_> = syscalls(&ev, "newfstatat")
        .into_iter()
        .chain(syscalls(&ev, "stat"))
        .collect();
    assert!(
        stat.iter()
            .any(|(_, c)| c.outputs.iter().any(|o| hex(&o.data) == s["stat_hex"])),
        "stat bytes not in trace"
    );
    // Inputs too: the path the kernel read, and the bytes written to the pipe.
    let input = |name: &str, arg: u8| -> Vec<Vec<u8>> {
        syscalls(&ev, name)
            .iter()
            .flat_map(|(_, c)| {
                c.outputs
                    .iter()
                    .filter(|o| o.arg == recorder_common::SLOT_INPUT + arg)
                    .map(|o| o.data.to_vec())
            })
            .collect()
    };
    let mut path = file.to_str().unwrap().as_bytes().to_vec();
    path.push(0);
    assert!(
        input("openat", 1).contains(&path),
        "openat path not recorded"
    );
    assert!(
        input("write", 1).contains(&b"ping-pong-1234".to_vec()),
        "write bytes not recorded"
    );

    let dn: i64 = s["getdents_ret"].parse().unwrap();
    assert_eq!(output_of(&ev, "getdents64", dn, 1), s["getdents_hex"]);
}
