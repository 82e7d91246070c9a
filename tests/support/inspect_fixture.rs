//! A small, fixed trace for the `uniplay inspect` tests, written with
//! `tracelog::TraceWriter` (no recording, no root needed). Every field that
//! shows up in inspect's output is set here, so the output is the same on
//! every machine.

#![allow(dead_code)]

use std::path::Path;

use tracelog::{
    Args, Event, EventKind, ExitInfo, Host, Losses, Meta, Output, SignalPhase, Syscall,
    TraceWriter, WriterOptions, SYSCALL_ENTER_UNSEEN, SYSCALL_INCOMPLETE_COPY, SYSCALL_NO_RETURN,
};

pub const ROOT: u32 = 100;
pub const CHILD: u32 = 101;
/// Time of the first event.
pub const T0: u64 = 1_000_000_000;

pub fn meta() -> Meta {
    Meta {
        uniplay_version: "0.1.0-test".into(),
        host: Host {
            kernel: "6.1.0-golden".into(),
            hostname: "golden".into(),
            arch: "x86_64".into(),
            cpus: 2,
        },
        mode: "launch".into(),
        command: vec!["demo".into(), "-x".into()],
        env: vec!["PATH=/usr/bin".into()],
        cwd: "/".into(),
        root_pid: ROOT,
        pids: vec![ROOT, CHILD],
        tids: vec![ROOT, CHILD],
        start_unix_ns: 1_700_000_000_000_000_000,
        end_unix_ns: 1_700_000_000_020_000_000,
        start_mono_ns: T0 - 1_000_000,
        end_mono_ns: T0 + 19_000_000,
        losses: Losses {
            ring_full: 2,
            incomplete_copies: 1,
            per_cpu: Vec::new(),
        },
        exit: Some(ExitInfo { code: 0, signal: 0 }),
        end_reason: "the target exited".into(),
        ..Meta::default()
    }
}

fn ev(epoch: u32, us: u64, cpu: u32, pid: u32, tid: u32, kind: EventKind) -> Event {
    Event {
        seq: 0,
        epoch,
        time_ns: T0 + us * 1000,
        cpu,
        pid,
        tid,
        kind,
    }
}

fn sc(
    nr: u32,
    args: &[u64],
    ret: i64,
    dur_us: u64,
    flags: u32,
    outputs: Vec<Output>,
) -> (EventKind, u64) {
    (
        EventKind::Syscall(Syscall {
            nr,
            args: Args::new(args),
            ret,
            enter_ns: 0,
            flags,
            outputs,
        }),
        dur_us,
    )
}

/// A syscall event exiting at `us` after `dur_us` inside.
fn call(epoch: u32, us: u64, pid: u32, tid: u32, k: (EventKind, u64)) -> Event {
    let (mut kind, dur_us) = k;
    let exit = T0 + us * 1000;
    if let EventKind::Syscall(s) = &mut kind {
        s.enter_ns = if s.flags & SYSCALL_ENTER_UNSEEN != 0 {
            0
        } else {
            exit - dur_us * 1000
        };
    }
    Event {
        seq: 0,
        epoch,
        time_ns: exit,
        cpu: 0,
        pid,
        tid,
        kind,
    }
}

fn out(arg: u8, addr: u64, data: &[u8], complete: bool) -> Output {
    Output {
        arg,
        addr,
        data: data.to_vec().into(),
        complete,
    }
}

const AT_FDCWD: u64 = 0xffff_ff9c;
const BUF: u64 = 0x7ffd_0000_2000;

pub fn events() -> Vec<Event> {
    let (r, c) = (ROOT, CHILD);
    let long = b"0123456789abcdefghijklmnopqrstuvwxyz\x00\x01\xff";
    vec![
        ev(
            0,
            0,
            0,
            r,
            r,
            EventKind::Exec {
                path: "/usr/bin/demo".into(),
                argv: vec!["demo".into(), "-x".into()],
            },
        ),
        call(
            0,
            12,
            r,
            r,
            sc(
                257,
                &[AT_FDCWD, 0x7ffd_0000_1000, 0x80000, 0],
                3,
                3,
                0,
                // The path the kernel read: slot 16 + argument 1.
                vec![out(17, 0x7ffd_0000_1000, b"/etc/demo.conf\0", true)],
            ),
        ),
        call(
            0,
            20,
            r,
            r,
            sc(
                257,
                &[AT_FDCWD, 0x7ffd_0000_1100, 0, 0],
                -2,
                2,
                0,
                vec![out(17, 0x7ffd_0000_1100, b"/etc/missing\0", true)],
            ),
        ),
        call(
            0,
            40,
            r,
            r,
            sc(
                0,
                &[3, BUF, 4096],
                16,
                5,
                0,
                vec![out(1, BUF, b"GET / HTTP/1.1\r\n", true)],
            ),
        ),
        call(
            0,
            60,
            r,
            r,
            sc(0, &[3, BUF, 4096], 39, 4, 0, vec![out(1, BUF, long, true)]),
        ),
        call(
            0,
            80,
            r,
            r,
            sc(
                17,
                &[3, BUF, 8192, 4096],
                8,
                3,
                SYSCALL_INCOMPLETE_COPY,
                vec![out(1, BUF, b"part", false)],
            ),
        ),
        call(
            0,
            95,
            r,
            r,
            sc(
                1,
                &[1, 0x5555_0000_0000, 5],
                5,
                6,
                0,
                vec![out(17, 0x5555_0000_0000, b"hello", true)],
            ),
        ),
        ev(
            0,
            100,
            0,
            r,
            r,
            EventKind::Switch {
                prev_tid: r,
                next_tid: 0,
                prev_state: 1,
                ip: 0x7f00_0000_1234,
                sp: 0x7ffd_0000_0f00,
            },
        ),
        ev(
            0,
            250,
            0,
            r,
            r,
            EventKind::Switch {
                prev_tid: 0,
                next_tid: r,
                prev_state: 0,
                ip: 0,
                sp: 0,
            },
        ),
        call(
            0,
            260,
            r,
            r,
            sc(
                0,
                &[0, BUF, 4096],
                5,
                158,
                0,
                vec![out(1, BUF, b"hello", true)],
            ),
        ),
        ev(
            0,
            300,
            0,
            r,
            r,
            EventKind::Fork {
                child_pid: c,
                child_tid: c,
                flags: 0x1200011,
            },
        ),
        call(
            0,
            305,
            r,
            r,
            sc(
                56,
                &[0x1200011, 0, 0, 0x7f00_0000_2000, 0],
                c as i64,
                40,
                0,
                vec![],
            ),
        ),
        ev(
            0,
            310,
            1,
            c,
            c,
            EventKind::Switch {
                prev_tid: 0,
                next_tid: c,
                prev_state: 0,
                ip: 0,
                sp: 0,
            },
        ),
        call(0, 320, c, c, sc(39, &[], c as i64, 1, 0, vec![])),
        ev(
            0,
            400,
            0,
            r,
            r,
            EventKind::Signal {
                sig: 2,
                phase: SignalPhase::Generated,
                code: 0,
                errno: 0,
                result: 0,
                target_tid: c,
            },
        ),
        ev(
            0,
            410,
            1,
            c,
            c,
            EventKind::Signal {
                sig: 2,
                phase: SignalPhase::Delivered,
                code: 0,
                errno: 0,
                result: 0,
                target_tid: c,
            },
        ),
        ev(
            0,
            420,
            1,
            c,
            c,
            EventKind::Exit {
                code: 0,
                signal: 2,
                group_dead: true,
            },
        ),
        ev(
            0,
            421,
            1,
            c,
            c,
            EventKind::Switch {
                prev_tid: c,
                next_tid: 0,
                prev_state: 0x80,
                ip: 0,
                sp: 0,
            },
        ),
        ev(1, 500, 0, r, r, EventKind::EpochMark { epoch: 1 }),
        call(1, 510, r, r, sc(7, &[], 1, 0, SYSCALL_ENTER_UNSEEN, vec![])),
        call(
            1,
            600,
            r,
            r,
            sc(
                61,
                &[u64::MAX, 0x7ffd_0000_3000, 0, 0],
                c as i64,
                180,
                0,
                vec![out(1, 0x7ffd_0000_3000, &[0x02, 0, 0, 0], true)],
            ),
        ),
        ev(
            1,
            700,
            0,
            r,
            r,
            EventKind::Switch {
                prev_tid: r,
                next_tid: 0,
                prev_state: 0,
                ip: 0,
                sp: 0,
            },
        ),
        ev(
            1,
            720,
            0,
            r,
            r,
            EventKind::Switch {
                prev_tid: 0,
                next_tid: r,
                prev_state: 0,
                ip: 0,
                sp: 0,
            },
        ),
        call(1, 800, r, r, sc(231, &[0], 0, 0, SYSCALL_NO_RETURN, vec![])),
        ev(
            1,
            801,
            0,
            r,
            r,
            EventKind::Exit {
                code: 0,
                signal: 0,
                group_dead: true,
            },
        ),
    ]
}

/// Writes the fixture trace into `dir` with `frame_events` events per frame.
pub fn write(dir: &Path, frame_events: usize) {
    let opts = WriterOptions {
        force: true,
        frame_events,
        ..WriterOptions::default()
    };
    let mut w = TraceWriter::create(dir, meta(), opts).expect("create trace");
    for e in events() {
        w.push(e).expect("push event");
    }
    w.finish(meta()).expect("finish trace");
}
