//! Shared helpers for the tracelog integration tests.
// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use tracelog::{
    Args, Error, Event, EventKind, Meta, Output, SignalPhase, Syscall, Trace, TraceWriter,
    WriterOptions,
};

pub const GETPPID: u32 = 110;
pub const READ: u32 = 0;

pub fn meta() -> Meta {
    Meta {
        uniplay_version: "test".into(),
        mode: "launch".into(),
        command: vec!["/bin/true".into()],
        root_pid: 100,
        pids: vec![100],
        tids: vec![100, 101],
        ..Meta::default()
    }
}

pub fn opts(frame_events: usize) -> WriterOptions {
    WriterOptions {
        frame_events,
        ..WriterOptions::default()
    }
}

pub fn ev(time_ns: u64, tid: u32, kind: EventKind) -> Event {
    Event {
        seq: 999_999, // ignored by the writer
        epoch: 0,
        time_ns,
        cpu: 1,
        pid: 100,
        tid,
        kind,
    }
}

pub fn syscall(nr: u32, args: &[u64], ret: i64, enter_ns: u64, outputs: Vec<Output>) -> EventKind {
    EventKind::Syscall(Syscall {
        nr,
        args: Args::new(args),
        ret,
        enter_ns,
        flags: 0,
        outputs,
    })
}

/// Deterministic xorshift PRNG (tests need reproducible "random" timings).
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

/// One of every kind and interesting field value.
pub fn every_kind() -> Vec<Event> {
    let big: Bytes = (0..20_000u32)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into();
    let t = 1_000_000_000u64;
    let mut v = vec![
        ev(t, 100, syscall(GETPPID, &[], 99, t - 300, vec![])),
        ev(
            t + 1000,
            100,
            syscall(
                READ,
                &[3, 0x7fff_0000_1000, 4096],
                5,
                t + 600,
                vec![Output {
                    arg: 1,
                    addr: 0x7fff_0000_1000,
                    data: Bytes::from_static(b"hello"),
                    complete: true,
                }],
            ),
        ),
        // Negative time delta (clock skew between CPUs).
        ev(
            t + 900,
            101,
            syscall(READ, &[3, 0x7fff_0000_1000, 4096], -11, t + 800, vec![]),
        ),
        ev(
            t + 2000,
            101,
            EventKind::Syscall(Syscall {
                nr: 1,
                args: Args::new(&[1, 2, 3, 4, 5, u64::MAX]),
                ret: i64::MIN,
                enter_ns: t + 1500,
                flags: tracelog::SYSCALL_INCOMPLETE_COPY | tracelog::SYSCALL_ENTER_UNSEEN,
                outputs: vec![
                    Output {
                        arg: 2,
                        addr: 1,
                        data: Bytes::from_static(b"partial"),
                        complete: false,
                    },
                    Output {
                        arg: 3,
                        addr: u64::MAX,
                        data: Bytes::new(),
                        complete: true,
                    },
                ],
            }),
        ),
        // The same big payload twice: stored once in blobs.tlf.
        ev(
            t + 3000,
            100,
            syscall(
                READ,
                &[4, 0x1000, 20000],
                20000,
                t + 2500,
                vec![out(1, 0x1000, &big)],
            ),
        ),
        ev(
            t + 4000,
            101,
            syscall(
                READ,
                &[5, 0x2000, 20000],
                20000,
                t + 3500,
                vec![out(1, 0x2000, &big)],
            ),
        ),
        ev(
            t + 5000,
            100,
            EventKind::Switch {
                prev_tid: 100,
                next_tid: 101,
                prev_state: 1,
                ip: 0xffff_ffff_8100_0000,
                sp: 0x7ffe_0000_0000,
            },
        ),
        ev(
            t + 5001,
            101,
            EventKind::Switch {
                prev_tid: 101,
                next_tid: 0,
                prev_state: 0,
                ip: 0,
                sp: 0,
            },
        ),
        ev(
            t + 6000,
            100,
            EventKind::Fork {
                child_pid: 200,
                child_tid: 200,
                flags: 0x11,
            },
        ),
        ev(
            t + 7000,
            200,
            EventKind::Exec {
                path: "/bin/ls".into(),
                argv: vec![],
            },
        ),
        ev(
            t + 7100,
            200,
            EventKind::Exec {
                path: "/usr/bin/ünïcode".into(),
                argv: vec!["ls".into(), "".into(), "-l a".into()],
            },
        ),
        ev(
            t + 8000,
            200,
            EventKind::Signal {
                sig: 15,
                phase: SignalPhase::Generated,
                code: -6,
                errno: 0,
                result: 1,
                target_tid: 200,
            },
        ),
        ev(
            t + 8100,
            200,
            EventKind::Signal {
                sig: 15,
                phase: SignalPhase::Delivered,
                code: i32::MIN,
                errno: i32::MAX,
                result: -1,
                target_tid: 0,
            },
        ),
        ev(
            t + 9000,
            200,
            EventKind::Exit {
                code: 0,
                signal: 15,
                group_dead: true,
            },
        ),
        ev(
            t + 9100,
            101,
            EventKind::Exit {
                code: -1,
                signal: 0,
                group_dead: false,
            },
        ),
        ev(t + 9200, 100, syscall(231, &[0], 0, t + 9150, vec![])),
        ev(t + 10_000, 100, EventKind::EpochMark { epoch: 1 }),
    ];
    // Appended, so the indexes below stay as they were.
    let sync = |op, ip, object| ev(t + 10_100, 101, EventKind::Sync { op, ip, object });
    let syncs = [
        sync(0, 0x7f00_0000_1234, 0x5555_0000_00e0),
        sync(u32::MAX, u64::MAX, 0),
    ];
    // Vary cpu, pid and epoch too.
    v[3].cpu = 0;
    v[8].cpu = u32::MAX;
    v[9].pid = 200;
    v[10].pid = 200;
    v[11].pid = 200;
    v[12].pid = 200;
    v[13].pid = 200;
    if let EventKind::Syscall(s) = &mut v[15].kind {
        s.flags = tracelog::SYSCALL_NO_RETURN;
    }
    v[16].epoch = 1;
    v.extend(syncs.into_iter().map(|e| Event { epoch: 1, ..e }));
    v.push(Event {
        epoch: 1,
        ..ev(
            t + 11_000,
            100,
            syscall(GETPPID, &[], 99, t + 10_900, vec![]),
        )
    });
    v
}

pub fn out(arg: u8, addr: u64, data: &Bytes) -> Output {
    Output {
        arg,
        addr,
        data: data.clone(),
        complete: true,
    }
}

/// `n` getppid/read-like syscalls on two threads with jittered timings:
/// gaps 0.2-2 µs, durations 100-500 ns, a context switch every 64 events.
pub fn synthetic(n: usize, seed: u64) -> Vec<Event> {
    let mut rng = Rng(seed | 1);
    let mut t = 5_000_000_000u64;
    let mut tid = 1000;
    let mut v = Vec::with_capacity(n);
    for i in 0..n {
        t += rng.range(200, 2000);
        if i % 64 == 63 {
            let next = if tid == 1000 { 1001 } else { 1000 };
            v.push(ev(
                t,
                tid,
                EventKind::Switch {
                    prev_tid: tid,
                    next_tid: next,
                    prev_state: 0,
                    ip: 0,
                    sp: 0,
                },
            ));
            tid = next;
            continue;
        }
        let enter = t - rng.range(100, 500);
        let kind = if i % 2 == 0 {
            syscall(GETPPID, &[], 999, enter, vec![])
        } else {
            syscall(READ, &[3, 0x7ffd_1234_5000, 0], 0, enter, vec![])
        };
        let mut e = ev(t, tid, kind);
        e.pid = 1000;
        v.push(e);
    }
    v
}

/// The events as the reader returns them: seq assigned in push order.
pub fn expected(events: &[Event]) -> Vec<Event> {
    events
        .iter()
        .enumerate()
        .map(|(i, e)| Event {
            seq: i as u64,
            ..e.clone()
        })
        .collect()
}

pub fn write_trace(dir: &Path, events: &[Event], opts: WriterOptions) -> Meta {
    let mut w = TraceWriter::create(dir, meta(), opts).expect("create");
    for e in events {
        w.push(e.clone()).expect("push");
    }
    w.finish(meta()).expect("finish")
}

/// Drains an iterator: intact events, then the error if any (asserting that
/// the iterator ends right after it).
pub fn drain(mut it: impl Iterator<Item = Result<Event, Error>>) -> (Vec<Event>, Option<Error>) {
    let mut out = Vec::new();
    for r in it.by_ref() {
        match r {
            Ok(e) => out.push(e),
            Err(e) => {
                assert!(it.next().is_none(), "iterator continued after an error");
                return (out, Some(e));
            }
        }
    }
    (out, None)
}

pub fn read_all(dir: &Path) -> (Vec<Event>, Option<Error>) {
    let t = Trace::open(dir).expect("open");
    drain(t.events())
}

pub fn instant_flush() -> WriterOptions {
    WriterOptions {
        flush_interval: Duration::ZERO,
        ..WriterOptions::default()
    }
}
