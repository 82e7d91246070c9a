//! Uprobes on the C library's synchronisation functions
//! ([`recorder_common::SYNC_FUNCTIONS`]), attached to each process once it
//! has a second thread: the order in which threads enter them is the
//! order of their critical sections, which uncontended locks (a few atomic
//! instructions, no syscall) leave nowhere else. Single-threaded processes
//! pay nothing.
//!
//! A uprobe is a breakpoint the kernel writes into the probed process's
//! copy of the library's code page, and checkpoints read that page: the
//! bytes it replaced are kept ([`Hooked::points`]) and put back in what
//! is stored, so traces hold the library as the program has it.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{mpsc, Arc, Mutex},
};

use aya::{
    maps::MapData,
    programs::{
        uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeLink, UProbeScope},
        UProbe,
    },
    Ebpf,
};
use object::{Object, ObjectSection, ObjectSymbol};
use recorder_common::{sync_op, sync_returns, RetSlot};

use crate::sys;

/// The loaded programs' names in the eBPF object: at the functions'
/// entries, and at the returns of those that acquire
/// (`recorder_common::sync_returns`).
pub const PROGRAMS: [&str; 2] = ["sync_op", "sync_ret"];

/// One function of a library: its op code, file offset and first byte.
#[derive(Debug, Clone, Copy)]
struct Entry {
    op: u32,
    offset: u64,
    byte: u8,
}

/// Attaches the sync probes to processes.
pub struct SyncHooks {
    ebpf: Arc<Mutex<Ebpf>>,
    /// `RETSLOTS` (see `recorder_common::RetSlot`).
    retslots: aya::maps::HashMap<MapData, RetSlot, u64>,
    /// Library path → its functions (deduplicated by offset: aliases such
    /// as versioned symbols share one entry).
    libs: HashMap<PathBuf, Arc<Vec<Entry>>>,
    /// Links are dropped (detached: RCU waits of tens of ms) on a thread
    /// of their own, never on the supervisor's.
    dropper: mpsc::Sender<Vec<UProbeLink>>,
}

impl std::fmt::Debug for SyncHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncHooks")
            .field("libs", &self.libs.len())
            .finish_non_exhaustive()
    }
}

/// The probes of one process image; detached when dropped.
pub struct Hooked {
    links: Vec<UProbeLink>,
    /// Probed addresses in the process and the byte each breakpoint
    /// replaced, sorted by address.
    pub points: Vec<(u64, u8)>,
    dropper: mpsc::Sender<Vec<UProbeLink>>,
}

impl std::fmt::Debug for Hooked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooked")
            .field("points", &self.points.len())
            .finish_non_exhaustive()
    }
}

impl Drop for Hooked {
    fn drop(&mut self) {
        let links = std::mem::take(&mut self.links);
        if let Err(mpsc::SendError(links)) = self.dropper.send(links) {
            // The process is ending: its exit closes them.
            std::mem::forget(links);
        }
    }
}

impl SyncHooks {
    /// `ebpf` holds the loaded (not attached) [`PROGRAMS`] and the
    /// `RETSLOTS` map, which this takes.
    pub fn new(ebpf: Arc<Mutex<Ebpf>>) -> Result<SyncHooks, String> {
        let map = ebpf
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take_map("RETSLOTS")
            .ok_or("the RETSLOTS map is missing")?;
        let retslots = aya::maps::HashMap::try_from(map).map_err(|e| e.to_string())?;
        let (dropper, links) = mpsc::channel::<Vec<UProbeLink>>();
        let _ = std::thread::Builder::new()
            .name("uniplay-unhook".into())
            .spawn(move || links.into_iter().for_each(drop));
        Ok(SyncHooks {
            ebpf,
            retslots,
            libs: HashMap::new(),
            dropper,
        })
    }

    /// Probes the synchronisation functions of the C library (and
    /// libpthread, where older ones keep them) that `pid` has mapped.
    /// `Ok(None)`: it maps none (a static binary, another libc).
    pub fn attach(&mut self, pid: u32) -> Result<Option<Hooked>, String> {
        let maps = sys::maps(pid).map_err(|e| format!("reading its maps: {e}"))?;
        let mut libs: Vec<&str> = maps
            .iter()
            .map(|m| m.path.as_str())
            .filter(|p| is_sync_library(p))
            .collect();
        libs.sort_unstable();
        libs.dedup();
        let mut hooked = Hooked {
            links: Vec::new(),
            points: Vec::new(),
            dropper: self.dropper.clone(),
        };
        let scope = UProbeScope::OneProcess(
            std::num::NonZeroU32::new(pid).ok_or("process 0 cannot be probed")?,
        );
        for lib in libs {
            let entries = self.entries(Path::new(lib))?;
            let ebpf = self.ebpf.clone();
            let mut ebpf = ebpf.lock().unwrap_or_else(|e| e.into_inner());
            for (i, program) in PROGRAMS.into_iter().enumerate() {
                let prog: &mut UProbe = ebpf
                    .program_mut(program)
                    .ok_or("a sync probe program is missing")?
                    .try_into()
                    .map_err(|e| format!("{e}"))?;
                let returns = i == 1;
                for e in entries.iter().filter(|e| !returns || sync_returns(e.op)) {
                    let Some(m) = maps.iter().find(|m| {
                        m.path == lib
                            && m.perms.contains('x')
                            && (m.offset..m.offset + (m.end - m.start)).contains(&e.offset)
                    }) else {
                        continue;
                    };
                    let point = UProbeAttachPoint {
                        location: UProbeAttachLocation::AbsoluteOffset(e.offset),
                        cookie: Some(e.op.into()),
                    };
                    let id = prog
                        .attach(point, lib, scope)
                        .map_err(|err| format!("probing {lib}: {err}"))?;
                    let link = prog.take_link(id).map_err(|err| format!("{err}"))?;
                    hooked.links.push(link);
                    if !returns {
                        hooked.points.push((m.start + e.offset - m.offset, e.byte));
                    }
                }
            }
        }
        hooked.points.sort_unstable();
        Ok((!hooked.points.is_empty()).then_some(hooked))
    }

    /// What sync probes changed in the memory of process `pid` (`maps`):
    /// the first byte of every function probed in any process, whether or
    /// not this one is probed (a child forked from a probed one has the
    /// breakpoints in its copy of the pages until it runs into them), and
    /// the return addresses of its threads inside functions whose return
    /// is probed.
    pub fn unprobe(&self, pid: u32, maps: &[sys::MapEntry]) -> Unprobe {
        let mut slots: Vec<(u64, u64)> = Vec::new();
        let tramp = maps
            .iter()
            .find(|m| m.path == "[uprobes]")
            .map_or(0..0, |m| m.start..m.end);
        if !tramp.is_empty() {
            for key in self.retslots.keys().filter_map(Result::ok) {
                if key.tgid == u64::from(pid) {
                    if let Ok(orig) = self.retslots.get(&key, 0) {
                        slots.push((key.slot, orig));
                    }
                }
            }
            slots.sort_unstable();
        }
        Unprobe {
            bytes: self.points_in(maps),
            slots,
            tramp,
        }
    }

    /// Forgets the return addresses kept for process `pid` (gone, or a new
    /// image).
    pub fn forget(&mut self, pid: u32) {
        let stale: Vec<RetSlot> = self
            .retslots
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.tgid == u64::from(pid))
            .collect();
        for k in stale {
            let _ = self.retslots.remove(&k);
        }
    }

    fn points_in(&self, maps: &[sys::MapEntry]) -> Vec<(u64, u8)> {
        let mut points = Vec::new();
        for m in maps {
            let Some(entries) = self.libs.get(Path::new(&m.path)) else {
                continue;
            };
            let range = m.offset..m.offset + (m.end - m.start);
            for e in entries.iter().filter(|e| range.contains(&e.offset)) {
                points.push((m.start + e.offset - m.offset, e.byte));
            }
        }
        points.sort_unstable();
        points
    }

    /// The probed functions of library `path`, read once.
    fn entries(&mut self, path: &Path) -> Result<Arc<Vec<Entry>>, String> {
        if let Some(e) = self.libs.get(path) {
            return Ok(e.clone());
        }
        let data = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        let entries =
            Arc::new(sync_entries(&data).map_err(|e| format!("{}: {e}", path.display()))?);
        self.libs.insert(path.to_path_buf(), entries.clone());
        Ok(entries)
    }
}

/// A library that may hold the probed functions: glibc's libc, and its
/// libpthread before 2.34.
fn is_sync_library(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.starts_with("libc.so") || name.starts_with("libc-2.") || name.starts_with("libpthread")
}

/// The defined dynamic symbols of the ELF image `data` named in
/// `SYNC_FUNCTIONS`, by file offset (one entry per offset).
fn sync_entries(data: &[u8]) -> Result<Vec<Entry>, object::Error> {
    let file = object::File::parse(data)?;
    let mut out: Vec<Entry> = Vec::new();
    for sym in file.dynamic_symbols() {
        let (Ok(name), Some(index)) = (sym.name(), sym.section_index()) else {
            continue;
        };
        let Some(op) = sync_op(name) else {
            continue;
        };
        if !sym.is_definition() {
            continue;
        }
        let section = file.section_by_index(index)?;
        let Some((start, _)) = section.file_range() else {
            continue;
        };
        let offset = sym.address() - section.address() + start;
        let Some(&byte) = data.get(offset as usize) else {
            continue;
        };
        if !out.iter().any(|e| e.offset == offset) {
            out.push(Entry { op, offset, byte });
        }
    }
    Ok(out)
}

/// What sync probes changed in a process's memory, to put back in the
/// pages checkpoints store (see [`SyncHooks::unprobe`]).
#[derive(Debug, Default, Clone)]
pub struct Unprobe {
    /// Breakpoint addresses and the bytes they replaced, sorted.
    bytes: Vec<(u64, u8)>,
    /// Stack slots and the return addresses the kernel replaced there
    /// with its trampoline's (an address in `tramp`), sorted.
    slots: Vec<(u64, u64)>,
    tramp: std::ops::Range<u64>,
}

impl Unprobe {
    /// Whether anything lies in `[addr, addr + len)`.
    pub fn touches(&self, addr: u64, len: u64) -> bool {
        let end = addr + len;
        let b = self.bytes.partition_point(|&(a, _)| a < addr);
        let s = self.slots.partition_point(|&(a, _)| a + 8 <= addr);
        self.bytes.get(b).is_some_and(|&(a, _)| a < end)
            || self.slots.get(s).is_some_and(|&(a, _)| a < end)
    }

    /// Puts back, in `page` (read at `addr`), what the probes changed: a
    /// return slot only if it still holds the trampoline's address (the
    /// thread may have died inside, and the slot be reused). Returns
    /// whether it changed anything.
    pub fn page(&self, addr: u64, page: &mut [u8]) -> bool {
        let end = addr + page.len() as u64;
        let from = self.bytes.partition_point(|&(a, _)| a < addr);
        let mut changed = false;
        for &(a, byte) in self.bytes[from..].iter().take_while(|&&(a, _)| a < end) {
            let b = &mut page[(a - addr) as usize];
            changed |= *b != byte;
            *b = byte;
        }
        for &(slot, orig) in &self.slots {
            // Only whole slots inside the page (stacks are 8-aligned).
            if slot < addr || slot + 8 > end {
                continue;
            }
            let at = (slot - addr) as usize;
            let word = &mut page[at..at + 8];
            let now = u64::from_le_bytes(word.try_into().expect("8 bytes"));
            if self.tramp.contains(&now) {
                word.copy_from_slice(&orig.to_le_bytes());
                changed = true;
            }
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_entries_of_this_machines_libc() {
        let Some(libc) = ["/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib64/libc.so.6"]
            .into_iter()
            .find(|p| Path::new(p).exists())
        else {
            eprintln!("skipped: no glibc found at the usual paths");
            return;
        };
        let data = std::fs::read(libc).unwrap();
        let entries = sync_entries(&data).unwrap();
        let lock = sync_op("pthread_mutex_lock").unwrap();
        let e = entries
            .iter()
            .find(|e| e.op == lock)
            .expect("pthread_mutex_lock");
        // A function entry: endbr64 (f3 0f 1e fa) or a plain first byte,
        // never a breakpoint (this is the file, not a probed page).
        assert_ne!(e.byte, 0xcc);
        let mut offsets: Vec<u64> = entries.iter().map(|e| e.offset).collect();
        offsets.sort_unstable();
        offsets.dedup();
        assert_eq!(offsets.len(), entries.len(), "one entry per offset");
    }

    #[test]
    fn unprobe_puts_back_only_what_lies_inside() {
        let u = Unprobe {
            bytes: vec![(0x0fff, 1), (0x1000, 2), (0x1ffe, 3), (0x2000, 4)],
            slots: Vec::new(),
            tramp: 0..0,
        };
        let mut page = vec![0xcc; 0x1000];
        assert!(u.touches(0x1000, 0x1000) && !u.touches(0x3000, 0x1000));
        assert!(u.page(0x1000, &mut page));
        assert_eq!((page[0], page[0xffe], page[0xfff]), (2, 3, 0xcc));
        assert!(!u.page(0x1000, &mut page));
    }

    #[test]
    fn unprobe_restores_return_addresses_still_hijacked() {
        let tramp = 0x7fff_ffff_e000..0x7fff_ffff_f000;
        let u = Unprobe {
            bytes: Vec::new(),
            slots: vec![(0x1010, 0x5555_1234), (0x1020, 0x5555_5678)],
            tramp: tramp.clone(),
        };
        let mut page = vec![0u8; 0x1000];
        page[0x10..0x18].copy_from_slice(&tramp.start.to_le_bytes());
        // 0x1020 no longer holds the trampoline: left alone.
        page[0x20..0x28].copy_from_slice(&42u64.to_le_bytes());
        assert!(u.touches(0x1000, 0x1000));
        assert!(u.page(0x1000, &mut page));
        assert_eq!(&page[0x10..0x18], &0x5555_1234u64.to_le_bytes());
        assert_eq!(&page[0x20..0x28], &42u64.to_le_bytes());
    }

    #[test]
    fn sync_libraries() {
        assert!(is_sync_library("/lib/x86_64-linux-gnu/libc.so.6"));
        assert!(is_sync_library("/lib64/libpthread.so.0"));
        assert!(!is_sync_library("/usr/lib/libcrypto.so.3"));
        assert!(!is_sync_library("[vdso]"));
    }
}
