//! Comparing a live restored process with a checkpoint: registers, FPU
//! state, memory map and stored memory.

use std::fmt;

use tracelog::{Mapping, Trace, PAGE_SIZE};

use crate::{regs, restore::checkpoint_process, sys, ReplayError, Restored};

const PAGE: u64 = PAGE_SIZE as u64;

/// At most this many differing pages are listed per comparison (the first
/// ones, by address).
pub const MAX_PAGE_DIFFERENCES: usize = 64;

/// Registers `compare` does not check. None so far: every one of the 27
/// words is restored exactly.
pub const IGNORED_REGISTERS: [&str; 0] = [];

/// The resume flag of eflags, not compared.
const EFLAGS_RF: u64 = 1 << 16;

/// Bytes of the FXSAVE area `compare` checks: 0..464 (control, status,
/// x87 and SSE registers, MXCSR). 464..512 is left to software (the kernel
/// keeps its XSAVE sizes there), not thread state.
const FX_COMPARED: usize = 464;

/// One way the live process differs from the checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Difference {
    /// A general register of thread `tid` (recorded tid).
    Register {
        tid: u32,
        name: &'static str,
        expected: u64,
        actual: u64,
    },
    /// The legacy FPU/SSE state (FXSAVE area) of thread `tid`.
    Fpu { tid: u32 },
    /// The page at `addr`; `first_byte` is the address of its first
    /// differing byte.
    Page {
        addr: u64,
        first_byte: u64,
        /// The 8 bytes at `first_byte` (little-endian), recorded and live.
        expected: u64,
        actual: u64,
    },
    /// A recorded thread has no live counterpart.
    MissingThread { tid: u32 },
    /// The memory map: a recorded range not found live (`actual` shows what
    /// is there instead), or a live range not recorded.
    Map { expected: String, actual: String },
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Difference::Register {
                tid,
                name,
                expected,
                actual,
            } => write!(
                f,
                "thread {tid}: {name} is {actual:#x}, expected {expected:#x}"
            ),
            Difference::Fpu { tid } => write!(f, "thread {tid}: FPU/SSE state differs"),
            Difference::Page {
                addr,
                first_byte,
                expected,
                actual,
            } => {
                write!(f, "page {addr:#x} differs (first at {first_byte:#x}: {actual:#018x}, expected {expected:#018x})")
            }
            Difference::MissingThread { tid } => write!(f, "thread {tid} is missing"),
            Difference::Map { expected, actual } => {
                write!(f, "memory map: expected {expected}, found {actual}")
            }
        }
    }
}

/// Compares the live restored process (all threads stopped) with checkpoint
/// `epoch` of the trace: every thread's general registers (all 27 words but
/// [`IGNORED_REGISTERS`]) and legacy FPU state, the memory map, and every
/// stored mapping's memory (at most [`MAX_PAGE_DIFFERENCES`] pages are
/// listed). `ignore` = `[start, end)` address ranges to skip (known
/// non-deterministic bytes such as an rseq area). The scratch page of
/// `live` is not part of the comparison.
pub fn compare(
    trace: &Trace,
    epoch: u32,
    pid: u32,
    live: &Restored,
    ignore: &[(u64, u64)],
) -> Result<Vec<Difference>, ReplayError> {
    let proc = &checkpoint_process(trace, epoch, pid)?;
    let mut out = Vec::new();

    for t in &proc.threads {
        let Some(&ltid) = live.tids.get(&t.tid) else {
            out.push(Difference::MissingThread { tid: t.tid });
            continue;
        };
        let r = sys::getregs(ltid).map_err(ReplayError::sys("PTRACE_GETREGS", ltid))?;
        let actual = regs::to_words(&r);
        for (i, name) in regs::REG_NAMES.iter().enumerate() {
            if IGNORED_REGISTERS.contains(name) {
                continue;
            }
            let mut expected = t.regs.get(i).copied().unwrap_or(0);
            let mut got = actual[i];
            if *name == "eflags" {
                // RF only tells the CPU to skip an instruction breakpoint
                // once; the kernel sets it on some returns to user mode.
                (expected, got) = (expected & !EFLAGS_RF, got & !EFLAGS_RF);
            }
            if expected != got {
                out.push(Difference::Register {
                    tid: t.tid,
                    name,
                    expected,
                    actual: actual[i],
                });
            }
        }
        if !t.fpregs.is_empty() {
            let fx = sys::xstate(ltid).map_err(ReplayError::sys("PTRACE_GETREGSET", ltid))?;
            if !fx_equal(&t.fpregs, &fx) {
                out.push(Difference::Fpu { tid: t.tid });
            }
        }
    }

    let actual_maps: Vec<sys::MapEntry> = sys::maps(live.pid)
        .map_err(ReplayError::sys("read maps", live.pid))?
        .into_iter()
        .filter(|m| m.start != live.scratch)
        .collect();
    out.extend(map_differences(&proc.maps, &actual_maps));

    let image = trace
        .checkpoint_memory(epoch, pid)
        .map_err(|source| ReplayError::Trace { epoch, source })?;
    let zero = [0u8; PAGE_SIZE];
    let mut pages = 0;
    const CHUNK: u64 = 256 * PAGE;
    let mut buf = vec![0u8; CHUNK as usize];
    'maps: for m in proc.maps.iter().filter(|m| m.stored && m.start < m.end) {
        let mut at = m.start;
        while at < m.end {
            let len = (m.end - at).min(CHUNK) as usize;
            let n = live.read_memory(at, &mut buf[..len]).unwrap_or(0);
            buf[n..len].fill(0); // unreadable reads as zero, as the recorder stores it
            for (i, have) in buf[..len].chunks_exact(PAGE_SIZE).enumerate() {
                let addr = at + (i * PAGE_SIZE) as u64;
                let want: &[u8] = image.get(&addr).map_or(&zero, |p| p);
                if let Some(first_byte) = first_difference(addr, want, have, ignore) {
                    let at = (first_byte - addr) as usize;
                    if std::env::var_os("UNIPLAY_REPLAY_DEBUG").is_some() {
                        for (w, (a, b)) in want.chunks(8).zip(have.chunks(8)).enumerate() {
                            if a != b {
                                eprintln!(
                                    "  {:#x}: expected {a:02x?} got {b:02x?}",
                                    addr + 8 * w as u64
                                );
                            }
                        }
                    }
                    let word = |p: &[u8]| {
                        let mut w = [0u8; 8];
                        let end = (at + 8).min(p.len());
                        w[..end - at].copy_from_slice(&p[at..end]);
                        u64::from_le_bytes(w)
                    };
                    out.push(Difference::Page {
                        addr,
                        first_byte,
                        expected: word(want),
                        actual: word(have),
                    });
                    pages += 1;
                    if pages >= MAX_PAGE_DIFFERENCES {
                        break 'maps;
                    }
                }
            }
            at += len as u64;
        }
    }
    Ok(out)
}

/// Whether two FPU areas hold the same legacy (FXSAVE) state.
pub(crate) fn fx_equal(a: &[u8], b: &[u8]) -> bool {
    a.len() >= 512 && b.len() >= 512 && a[..FX_COMPARED] == b[..FX_COMPARED]
}

/// Address of the first byte where `want` and `have` (the page at `addr`)
/// differ outside `ignore`.
fn first_difference(addr: u64, want: &[u8], have: &[u8], ignore: &[(u64, u64)]) -> Option<u64> {
    if want == have {
        return None;
    }
    want.iter()
        .zip(have)
        .enumerate()
        .filter(|(_, (w, h))| w != h)
        .map(|(i, _)| addr + i as u64)
        .find(|a| !ignore.iter().any(|&(s, e)| (s..e).contains(a)))
}

/// A mapping as compared: range, permissions, and the name of a
/// kernel-provided mapping ([vdso] and friends); files and anonymous memory
/// are not told apart (restore maps copies of files, and anonymous memory
/// for files it has no copy of).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Shape {
    start: u64,
    end: u64,
    perms: String,
    special: &'static str,
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}-{:#x} {}", self.start, self.end, self.perms)?;
        if !self.special.is_empty() {
            write!(f, " {}", self.special)?;
        }
        Ok(())
    }
}

fn special(path: &str) -> &'static str {
    ["[vvar]", "[vvar_vclock]", "[vdso]", "[vsyscall]"]
        .into_iter()
        .find(|s| *s == path)
        .unwrap_or("")
}

/// Sorted shapes, adjacent ordinary ones with equal permissions merged (the
/// kernel merges or splits such areas for reasons that are not state).
/// Shared and private are not told apart: replay maps a shared file
/// mapping privately (its copy of the file is the trace's).
fn shapes(entries: impl Iterator<Item = (u64, u64, String, &'static str)>) -> Vec<Shape> {
    let mut v: Vec<Shape> = entries
        .map(|(start, end, perms, special)| Shape {
            start,
            end,
            perms: perms.replacen('s', "p", 1),
            special,
        })
        .collect();
    v.sort_by_key(|s| s.start);
    let mut out: Vec<Shape> = Vec::with_capacity(v.len());
    for s in v {
        if let Some(last) = out.last_mut() {
            if last.end == s.start
                && last.perms == s.perms
                && last.special.is_empty()
                && s.special.is_empty()
            {
                last.end = s.end;
                continue;
            }
        }
        out.push(s);
    }
    out
}

fn map_differences(recorded: &[Mapping], live: &[sys::MapEntry]) -> Vec<Difference> {
    let exp = shapes(
        recorded
            .iter()
            .filter(|m| m.path != "[uprobes]")
            .map(|m| (m.start, m.end, m.perms.clone(), special(&m.path))),
    );
    let act = shapes(
        live.iter()
            .map(|m| (m.start, m.end, m.perms.clone(), special(&m.path))),
    );
    let overlapping = |list: &[Shape], s: &Shape| -> String {
        let o: Vec<String> = list
            .iter()
            .filter(|x| x.start < s.end && s.start < x.end)
            .map(|x| x.to_string())
            .collect();
        if o.is_empty() {
            "nothing".into()
        } else {
            o.join(", ")
        }
    };
    let mut out = Vec::new();
    let missing: Vec<&Shape> = exp.iter().filter(|e| !act.contains(e)).collect();
    for e in &missing {
        out.push(Difference::Map {
            expected: e.to_string(),
            actual: overlapping(&act, e),
        });
    }
    for a in act.iter().filter(|a| !exp.contains(a)) {
        if missing.iter().any(|e| e.start < a.end && a.start < e.end) {
            continue; // already reported with the recorded range it replaces
        }
        out.push(Difference::Map {
            expected: "nothing".into(),
            actual: a.to_string(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(start: u64, end: u64, perms: &str, path: &str) -> Mapping {
        Mapping {
            start,
            end,
            perms: perms.into(),
            path: path.into(),
            ..Default::default()
        }
    }

    fn live(start: u64, end: u64, perms: &str, path: &str) -> sys::MapEntry {
        sys::MapEntry {
            start,
            end,
            perms: perms.into(),
            offset: 0,
            path: path.into(),
        }
    }

    #[test]
    fn compare_maps_merge_and_report() {
        let r = [
            rec(0x1000, 0x2000, "rw-p", "[heap]"),
            rec(0x2000, 0x3000, "rw-p", ""),
            rec(0x5000, 0x6000, "r-xp", "[vdso]"),
        ];
        let same = [
            live(0x1000, 0x3000, "rw-p", ""),
            live(0x5000, 0x6000, "r-xp", "[vdso]"),
        ];
        assert!(map_differences(&r, &same).is_empty());
        let other = [
            live(0x1000, 0x3000, "r--p", ""),
            live(0x5000, 0x6000, "r-xp", "[vdso]"),
            live(0x8000, 0x9000, "rw-p", ""),
        ];
        let d = map_differences(&r, &other);
        assert_eq!(d.len(), 2, "{d:?}");
        assert_eq!(
            d[0].to_string(),
            "memory map: expected 0x1000-0x3000 rw-p, found 0x1000-0x3000 r--p"
        );
        assert_eq!(
            d[1].to_string(),
            "memory map: expected nothing, found 0x8000-0x9000 rw-p"
        );
    }

    #[test]
    fn compare_first_difference_skips_ignored() {
        let a = [0u8; 16];
        let mut b = [0u8; 16];
        assert_eq!(first_difference(0x1000, &a, &b, &[]), None);
        b[3] = 1;
        b[9] = 1;
        assert_eq!(first_difference(0x1000, &a, &b, &[]), Some(0x1003));
        assert_eq!(
            first_difference(0x1000, &a, &b, &[(0x1000, 0x1008)]),
            Some(0x1009)
        );
        assert_eq!(first_difference(0x1000, &a, &b, &[(0x1000, 0x1010)]), None);
    }

    #[test]
    fn compare_difference_serializes() {
        let d = Difference::Register {
            tid: 7,
            name: "rip",
            expected: 1,
            actual: 2,
        };
        assert_eq!(d.to_string(), "thread 7: rip is 0x2, expected 0x1");
        assert_eq!(
            serde_json::to_string(&d).unwrap(),
            r#"{"kind":"register","tid":7,"name":"rip","expected":1,"actual":2}"#
        );
        let p = Difference::Page {
            addr: 0x1000,
            first_byte: 0x1004,
            expected: 0,
            actual: 0,
        };
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"kind":"page","addr":4096,"first_byte":4100,"expected":0,"actual":0}"#
        );
    }
}
