//! Turns decoded ring records into trace events: joins a syscall's output
//! chunks to it, pairs an exec's path (from the scheduler tracepoint) with
//! its argv (copied at the execve's exit), and names the thread a context
//! switch is about.

use std::collections::HashMap;

use bytes::Bytes;
use recorder_common::*;
use tracelog::{Args, Event, EventKind, Output, SignalPhase, Syscall};

use crate::decode::Record;

#[derive(Debug)]
struct Partial {
    slot: u32,
    addr: u64,
    total: u64,
    data: Vec<u8>,
    complete: bool,
}

/// Reads `len` bytes at `addr` of process `pid`; returns what was readable.
pub type ReadMemory = fn(pid: u32, addr: u64, len: usize) -> Vec<u8>;

/// Longest output read from a held thread's memory (`REC_FETCH`); a longer
/// one is marked incomplete rather than held in the daemon's memory.
const FETCH_MAX: u64 = 1 << 30;

/// Record-to-event state. Records of one thread must be fed in ring order
/// (a syscall's chunks before the syscall); lifecycle records before data
/// records of the same drain (an exec's record precedes its execve's exit).
#[derive(Debug)]
pub struct Assembler {
    chunks: HashMap<u32, Vec<Partial>>,
    exec_paths: HashMap<u32, (u64, String)>,
    tgid_of: HashMap<u32, u32>,
    read_memory: ReadMemory,
    /// Threads held for outputs read from their memory (`REC_FETCH`), to be
    /// let go (`take_fetched`).
    fetched: Vec<u32>,
    /// Records that could not be decoded.
    pub malformed: u64,
}

impl Default for Assembler {
    fn default() -> Self {
        Self::with_memory(|pid, addr, len| {
            let mut buf = vec![0; len];
            let n = crate::sys::ptrace::copy_into(pid, addr, &mut buf);
            buf.truncate(n);
            buf
        })
    }
}

fn event(hdr: &RecHeader, kind: EventKind) -> Event {
    Event {
        seq: 0,
        epoch: 0,
        time_ns: hdr.time_ns,
        cpu: hdr.cpu,
        pid: hdr.pid,
        tid: hdr.tid,
        kind,
    }
}

impl Assembler {
    pub fn new() -> Self {
        Self::default()
    }

    /// An assembler that reads outputs left in memory with `read_memory`.
    pub fn with_memory(read_memory: ReadMemory) -> Self {
        Self {
            chunks: HashMap::new(),
            exec_paths: HashMap::new(),
            tgid_of: HashMap::new(),
            read_memory,
            fetched: Vec::new(),
            malformed: 0,
        }
    }

    /// Threads whose outputs were read from their memory since the last
    /// call: they may go on (the supervisor holds them until then).
    pub fn take_fetched(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.fetched)
    }

    /// Tells the assembler a thread's process (threads found at attach time).
    pub fn know_thread(&mut self, tid: u32, tgid: u32) {
        self.tgid_of.insert(tid, tgid);
    }

    /// The process of a thread seen so far.
    pub fn tgid(&self, tid: u32) -> Option<u32> {
        self.tgid_of.get(&tid).copied()
    }

    /// Feeds one record; finished events are appended to `out`.
    pub fn feed(&mut self, rec: Record<'_>, out: &mut Vec<Event>) {
        match rec {
            Record::Chunk(h, data) => self.chunk(&h, data),
            Record::Fetch(h) => self.fetch(&h),
            Record::Syscall(s) => self.syscall(&s, out),
            Record::Switch(s) => {
                // The eBPF side says which one is in the filter; a thread
                // not seen here yet (the launched command before its exec)
                // takes the record header's tgid when it is the previous
                // (current) task.
                let (about, pid) = if s.prev_is_target != 0 {
                    let pid = self.tgid_of.get(&s.prev_tid).copied();
                    (s.prev_tid, pid.unwrap_or(s.hdr.pid))
                } else {
                    let pid = self.tgid_of.get(&s.next_tid).copied();
                    (s.next_tid, pid.unwrap_or(s.next_tid))
                };
                let mut e = event(
                    &s.hdr,
                    EventKind::Switch {
                        prev_tid: s.prev_tid,
                        next_tid: s.next_tid,
                        prev_state: s.prev_state,
                        ip: s.ip,
                        sp: s.sp,
                    },
                );
                e.pid = pid;
                e.tid = about;
                out.push(e);
            }
            Record::Fork(f) => {
                self.tgid_of.insert(f.hdr.tid, f.hdr.pid);
                self.tgid_of.insert(f.child_tid, f.child_pid);
                out.push(event(
                    &f.hdr,
                    EventKind::Fork {
                        child_pid: f.child_pid,
                        child_tid: f.child_tid,
                        flags: f.flags,
                    },
                ));
            }
            Record::Exec { hdr, old_tid, path } => {
                if old_tid != hdr.tid {
                    self.tgid_of.remove(&old_tid);
                }
                self.tgid_of.insert(hdr.tid, hdr.pid);
                self.exec_paths.insert(
                    hdr.pid,
                    (hdr.time_ns, String::from_utf8_lossy(path).into_owned()),
                );
            }
            Record::Exit(x) => {
                self.chunks.remove(&x.hdr.tid);
                out.push(event(
                    &x.hdr,
                    EventKind::Exit {
                        code: 0,
                        signal: 0,
                        group_dead: x.group_dead != 0,
                    },
                ));
            }
            Record::Sync(s) => out.push(event(
                &s.hdr,
                EventKind::Sync {
                    op: s.op,
                    ip: s.ip,
                    object: s.object,
                },
            )),
            Record::Signal(s) => {
                let phase = if s.phase == SIG_DELIVERED {
                    SignalPhase::Delivered
                } else {
                    SignalPhase::Generated
                };
                out.push(event(
                    &s.hdr,
                    EventKind::Signal {
                        sig: s.sig,
                        phase,
                        code: s.code,
                        errno: s.errno,
                        // Delivered: whether a handler ran (1) or the
                        // default action (0), which may kill.
                        result: if phase == SignalPhase::Delivered {
                            (s.sa_handler != 0) as i32
                        } else {
                            s.result
                        },
                        target_tid: s.target_tid,
                    },
                ));
            }
        }
    }

    fn chunk(&mut self, h: &ChunkHdr, data: &[u8]) {
        let parts = self.chunks.entry(h.hdr.tid).or_default();
        let continues = h.offset != 0
            && parts
                .last()
                .is_some_and(|p| p.slot == h.slot && p.addr + p.data.len() as u64 == h.addr);
        if !continues {
            parts.push(Partial {
                slot: h.slot,
                addr: h.addr,
                total: h.total,
                data: Vec::with_capacity(h.total.min(1 << 22) as usize),
                complete: h.offset == 0,
            });
        }
        let p = parts.last_mut().expect("pushed above");
        // A chunk the kernel could not copy arrives empty: the output is cut.
        p.complete &= data.len() as u64 == h.len as u64 && h.len != 0;
        p.data.extend_from_slice(data);
    }

    /// An output left in the thread's memory: the thread is stopped on
    /// its way back from the syscall, so its memory still holds what the
    /// kernel wrote there.
    fn fetch(&mut self, h: &ChunkHdr) {
        let len = h.total.saturating_sub(h.offset);
        let data = if len <= FETCH_MAX {
            (self.read_memory)(h.hdr.pid, h.addr, len as usize)
        } else {
            Vec::new()
        };
        self.fetched.push(h.hdr.tid);
        self.chunks.entry(h.hdr.tid).or_default().push(Partial {
            slot: h.slot,
            addr: h.addr,
            total: h.total,
            complete: h.offset == 0 && data.len() as u64 == len,
            data,
        });
    }

    fn syscall(&mut self, s: &SyscallRec, out: &mut Vec<Event>) {
        if self.tgid_of.get(&s.hdr.tid) != Some(&s.hdr.pid) {
            self.tgid_of.insert(s.hdr.tid, s.hdr.pid);
        }
        let spec = spec(s.nr);
        let nargs = (spec.nargs as usize).min(6);
        let mut outputs = Vec::new();
        let mut argv = None;
        let parts = if self.chunks.is_empty() {
            Vec::new()
        } else {
            self.chunks.remove(&s.hdr.tid).unwrap_or_default()
        };
        for p in parts {
            let complete = p.complete && p.data.len() as u64 == p.total;
            if p.slot == SLOT_EXEC_ARGV {
                argv = Some(split_argv(&p.data));
                continue;
            }
            outputs.push(Output {
                arg: p.slot as u8,
                addr: p.addr,
                data: Bytes::from(p.data),
                complete,
            });
        }
        let is_exec = (s.nr == nr::EXECVE || s.nr == nr::EXECVEAT) && s.ret == 0;
        if is_exec {
            let argv = argv.unwrap_or_default();
            let (time_ns, path) = self
                .exec_paths
                .remove(&s.hdr.pid)
                .unwrap_or_else(|| (s.hdr.time_ns, argv.first().cloned().unwrap_or_default()));
            let mut e = event(&s.hdr, EventKind::Exec { path, argv });
            e.time_ns = time_ns;
            out.push(e);
        }
        out.push(event(
            &s.hdr,
            EventKind::Syscall(Syscall {
                nr: s.nr,
                args: Args::new(&s.args[..nargs]),
                ret: s.ret,
                enter_ns: s.enter_ns,
                flags: s.flags,
                outputs,
            }),
        ));
    }
}

fn split_argv(block: &[u8]) -> Vec<String> {
    block
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr(kind: u32, tid: u32, t: u64) -> RecHeader {
        RecHeader {
            kind,
            cpu: 0,
            time_ns: t,
            pid: tid,
            tid,
        }
    }

    #[test]
    fn assemble_chunks_join_their_syscall() {
        let mut a = Assembler::new();
        let mut out = Vec::new();
        let c1 = ChunkHdr {
            hdr: hdr(REC_CHUNK, 5, 1),
            slot: 1,
            len: 3,
            addr: 0x1000,
            offset: 0,
            total: 5,
        };
        let c2 = ChunkHdr {
            hdr: hdr(REC_CHUNK, 5, 1),
            slot: 1,
            len: 2,
            addr: 0x1003,
            offset: 3,
            total: 5,
        };
        a.feed(Record::Chunk(c1, b"hel"), &mut out);
        a.feed(Record::Chunk(c2, b"lo"), &mut out);
        let s = SyscallRec {
            hdr: hdr(REC_SYSCALL, 5, 2),
            nr: 0,
            ret: 5,
            args: [3, 0x1000, 64, 9, 9, 9],
            ..Default::default()
        };
        a.feed(Record::Syscall(s), &mut out);
        let EventKind::Syscall(sc) = &out[0].kind else {
            panic!()
        };
        assert_eq!(sc.args.as_slice(), &[3, 0x1000, 64]);
        assert_eq!(sc.outputs.len(), 1);
        assert_eq!(&sc.outputs[0].data[..], b"hello");
        assert!(sc.outputs[0].complete);
    }

    #[test]
    fn assemble_output_left_in_memory_is_read_from_it() {
        // A fake memory: byte i of any address range is (addr + i) as u8,
        // and nothing at or above 0x9000 is readable.
        let mut a = Assembler::with_memory(|_pid, addr, len| {
            (addr..(addr + len as u64).min(0x9000))
                .map(|x| x as u8)
                .collect()
        });
        let mut out = Vec::new();
        let left = |addr, total| ChunkHdr {
            hdr: hdr(REC_FETCH, 5, 1),
            slot: 1,
            len: 0,
            addr,
            offset: 0,
            total,
        };
        let read = |time| SyscallRec {
            hdr: hdr(REC_SYSCALL, 5, time),
            nr: 0,
            ret: 0x100,
            ..Default::default()
        };
        a.feed(Record::Fetch(left(0x1000, 0x100)), &mut out);
        a.feed(Record::Syscall(read(2)), &mut out);
        assert_eq!(a.take_fetched(), vec![5]);
        // Partly unreadable: incomplete, never silently short.
        a.feed(Record::Fetch(left(0x8f80, 0x100)), &mut out);
        a.feed(Record::Syscall(read(3)), &mut out);
        let outputs = |e: &Event| match &e.kind {
            EventKind::Syscall(sc) => sc.outputs.clone(),
            _ => panic!(),
        };
        let o = outputs(&out[0]);
        assert_eq!(o.len(), 1);
        assert!(o[0].complete);
        assert_eq!(o[0].addr, 0x1000);
        let want: Vec<u8> = (0x1000u64..0x1100).map(|x| x as u8).collect();
        assert_eq!(&o[0].data[..], &want[..]);
        assert!(!outputs(&out[1])[0].complete);
    }

    #[test]
    fn assemble_switch_names_the_target_side() {
        let mut a = Assembler::new();
        let mut out = Vec::new();
        let switch = |prev_tid, next_tid, current, prev_is_target| SwitchRec {
            hdr: hdr(REC_SWITCH, current, 1),
            prev_tid,
            next_tid,
            prev_is_target,
            ..Default::default()
        };
        // Nothing seen of 42 yet (a launched command before its exec): it
        // is the one switched out, to the idle task.
        a.feed(Record::Switch(switch(42, 0, 42, 1)), &mut out);
        // Nor of 43, switched in from a task outside the target.
        a.feed(Record::Switch(switch(41, 43, 41, 0)), &mut out);
        // 7 is known (thread of 5): switched in, from an unknown task.
        a.know_thread(7, 5);
        a.feed(Record::Switch(switch(99, 7, 99, 0)), &mut out);
        let who: Vec<_> = out.iter().map(|e| (e.pid, e.tid)).collect();
        assert_eq!(who, [(42, 42), (43, 43), (5, 7)]);
    }

    #[test]
    fn assemble_missing_chunk_marks_incomplete() {
        let mut a = Assembler::new();
        let mut out = Vec::new();
        let c1 = ChunkHdr {
            hdr: hdr(REC_CHUNK, 5, 1),
            slot: 1,
            len: 3,
            addr: 0x1000,
            offset: 0,
            total: 6,
        };
        a.feed(Record::Chunk(c1, b"hel"), &mut out);
        let s = SyscallRec {
            hdr: hdr(REC_SYSCALL, 5, 2),
            nr: 0,
            ret: 6,
            ..Default::default()
        };
        a.feed(Record::Syscall(s), &mut out);
        let EventKind::Syscall(sc) = &out[0].kind else {
            panic!()
        };
        assert!(!sc.outputs[0].complete);
    }

    #[test]
    fn assemble_exec_pairs_path_and_argv() {
        let mut a = Assembler::new();
        let mut out = Vec::new();
        a.feed(
            Record::Exec {
                hdr: hdr(REC_EXEC, 9, 10),
                old_tid: 9,
                path: b"/bin/echo",
            },
            &mut out,
        );
        let c = ChunkHdr {
            hdr: hdr(REC_CHUNK, 9, 11),
            slot: SLOT_EXEC_ARGV,
            len: 8,
            addr: 1,
            offset: 0,
            total: 8,
        };
        a.feed(Record::Chunk(c, b"echo\0hi\0"), &mut out);
        a.feed(
            Record::Syscall(SyscallRec {
                hdr: hdr(REC_SYSCALL, 9, 12),
                nr: nr::EXECVE,
                ..Default::default()
            }),
            &mut out,
        );
        assert_eq!(out.len(), 2);
        assert_eq!(
            out[0].kind,
            EventKind::Exec {
                path: "/bin/echo".into(),
                argv: vec!["echo".into(), "hi".into()]
            }
        );
        assert_eq!(out[0].time_ns, 10);
        let EventKind::Syscall(sc) = &out[1].kind else {
            panic!()
        };
        assert!(sc.outputs.is_empty());
    }
}
