//! A small, fixed trace for the `uniplay inspect` tests, written with
//! `tracelog::TraceWriter` (no recording, no root needed). Every field that
//! shows up in inspect's output is set here, so the output is the same on
//! every machine.

#![allow(dead_code)]

use std::path::Path;

use tracelog::{
    Args, Checkpoint, CheckpointWriter, Event, EventKind, ExitInfo, FdState, Host, Losses, Mapping,
    Meta, Output, ProcessState, SigAction, SignalPhase, Syscall, ThreadState, TraceWriter,
    WriterOptions, PAGE_SIZE, SYSCALL_ENTER_UNSEEN, SYSCALL_INCOMPLETE_COPY, SYSCALL_NO_RETURN,
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

/// Content hash of the (not stored) copy of /usr/bin/demo in `files/`.
pub const DEMO_HASH: &str = "3f2a1b9c0d4e5f60718293a4b5c6d7e8f9012345a6b7c8d9e0f1a2b3c4d5e6f7";
pub const HEAP: u64 = 0x5555_5555_9000;
pub const STACK: u64 = 0x7ffd_0000_0000;

fn maps() -> Vec<Mapping> {
    let map = |start: u64, end: u64, perms: &str, path: &str, file: bool, stored: bool| Mapping {
        start,
        end,
        perms: perms.into(),
        offset: 0,
        dev: if file { "08:01" } else { "00:00" }.into(),
        inode: if file { 4242 } else { 0 },
        path: path.into(),
        file: file.then(|| DEMO_HASH.to_string()),
        stored,
    };
    vec![
        map(
            0x5555_5555_4000,
            0x5555_5555_6000,
            "r-xp",
            "/usr/bin/demo",
            true,
            false,
        ),
        map(HEAP, HEAP + 0x2000, "rw-p", "[heap]", false, true),
        map(STACK, STACK + 0x4000, "rw-p", "[stack]", false, true),
    ]
}

/// user_regs_struct with rip, rsp and fs_base set.
fn regs(rip: u64, rsp: u64) -> Vec<u64> {
    let mut r = vec![0u64; 27];
    r[16] = rip;
    r[19] = rsp;
    r[21] = 0x7f00_0000_0740;
    r
}

/// A stored page: pid, address, fill byte (the first 8 bytes hold the
/// address).
pub type Page = (u32, u64, u8);

/// The fixture's two checkpoints: epoch 0 at the first event (full image of
/// the root process, 2 pages) and epoch 1 at the EpochMark (1 changed page),
/// with the root waiting in wait4.
pub fn checkpoints() -> Vec<(Checkpoint, Vec<Page>)> {
    let process = |rip: u64, syscall: Option<i64>, sigmask: u64, full: bool| ProcessState {
        pid: ROOT,
        ppid: 1,
        exe: "/usr/bin/demo".into(),
        cwd: "/".into(),
        maps: maps(),
        threads: vec![ThreadState {
            tid: ROOT,
            regs: regs(rip, STACK + 0x3f00),
            fpregs: Vec::new(),
            sigmask,
            syscall,
            rseq: (0, 0),
        }],
        fds: vec![
            FdState {
                fd: 0,
                path: "/dev/null".into(),
                pos: 0,
                flags: 0o100000,
            },
            FdState {
                fd: 1,
                path: "pipe:[1234]".into(),
                pos: 0,
                flags: 0o1,
            },
            FdState {
                fd: 3,
                path: "/etc/demo.conf".into(),
                pos: 16,
                flags: 0o2100000,
            },
        ],
        sigactions: vec![
            SigAction {
                sig: 2,
                handler: 0x5555_5555_4100,
                flags: 0x0400_0000,
                restorer: 0x7f00_0000_3000,
                mask: 0,
            },
            SigAction {
                sig: 13,
                handler: 1,
                flags: 0,
                restorer: 0,
                mask: 0,
            },
        ],
        pages_stored: 0,
        full,
        memory: "fork".into(),
    };
    vec![
        (
            Checkpoint {
                epoch: 0,
                time_ns: T0,
                first_seq: 0,
                stop_ns: 1_250_000,
                reason: "start".into(),
                processes: vec![process(0x5555_5555_4000, None, 0, true)],
            },
            vec![(ROOT, HEAP, 0xaa), (ROOT, STACK + 0x3000, 0xbb)],
        ),
        (
            Checkpoint {
                epoch: 1,
                time_ns: T0 + 500_000,
                first_seq: 18,
                stop_ns: 750_000,
                reason: "timer".into(),
                processes: vec![process(0x5555_5555_4a2f, Some(61), 1 << 16, false)],
            },
            vec![(ROOT, STACK + 0x3000, 0xcc)],
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
    let cw = CheckpointWriter::new(dir).expect("checkpoint writer");
    for (cp, pages) in checkpoints() {
        let mut sink = cw.begin(cp.epoch).expect("begin checkpoint");
        for (pid, addr, fill) in pages {
            let mut data = vec![fill; PAGE_SIZE];
            data[..8].copy_from_slice(&addr.to_le_bytes());
            sink.page(pid, addr, &data).expect("store page");
        }
        sink.finish(&cp).expect("finish checkpoint");
    }
    w.finish(meta()).expect("finish trace");
}
