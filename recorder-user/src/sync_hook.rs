//! Uprobes on the C library's synchronisation functions
//! ([`recorder_common::SYNC_FUNCTIONS`]), attached to each process once it
//! has a second thread: the order in which threads enter them is the
//! order of their critical sections, which uncontended locks (a few atomic
//! instructions, no syscall) leave nowhere else. Single-threaded processes
//! pay nothing.
//!
//! A uprobe is a breakpoint the kernel writes into the probed process's
//! copy of the library's code page, and checkpoints read that page: the
//! bytes it replaced are known from the library's file
//! ([`SyncHooks::points_in`]) and put back in what is stored, so traces
//! hold the library as the program has it.

use std::{
    collections::HashMap,
    ffi::CString,
    os::fd::{AsFd, AsRawFd, OwnedFd},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        mpsc, Arc, Mutex,
    },
};

use aya::{
    programs::{
        uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeLink, UProbeScope},
        UProbe,
    },
    Ebpf,
};
use object::{Object, ObjectSection, ObjectSymbol};
use recorder_common::sync_op;

use crate::sys;

/// The loaded program's name in the eBPF object.
pub const PROGRAM: &str = "sync_op";

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
    /// Library path → its functions (deduplicated by offset: aliases such
    /// as versioned symbols share one entry).
    libs: HashMap<PathBuf, Arc<Vec<Entry>>>,
    /// Links are dropped (detached: RCU waits of tens of ms) on a thread
    /// of their own, never on the supervisor's.
    dropper: mpsc::Sender<Vec<Link>>,
    /// The program loaded again for multi-uprobe links (see
    /// [`load_multi`]); `None`: perf-event uprobes, one per function.
    multi: Option<OwnedFd>,
    /// Set when recording ends: links still attached are left to the
    /// recorder's exit (see [`SyncHooks::leave_to_exit`]).
    leave: Arc<AtomicBool>,
    /// Attaches under way: the dropper waits for them between detaches
    /// (both take the kernel's trace-event lock, a detach for about 0.1 s:
    /// a process's 24 attaches queued behind a process's 24 detaches kept
    /// the new one stopped at its clone for seconds).
    attaching: Arc<AtomicUsize>,
}

impl std::fmt::Debug for SyncHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncHooks")
            .field("libs", &self.libs.len())
            .finish_non_exhaustive()
    }
}

/// One attachment: a multi-uprobe link (every function of a library),
/// or, where the kernel has none, one perf-event uprobe per function.
#[expect(dead_code, reason = "held for their drop, which detaches")]
enum Link {
    Multi(OwnedFd),
    Single(UProbeLink),
}

/// The probes of one process image; detached when dropped.
pub struct Hooked {
    links: Vec<Link>,
    dropper: mpsc::Sender<Vec<Link>>,
    leave: Arc<AtomicBool>,
}

impl std::fmt::Debug for Hooked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooked")
            .field("links", &self.links.len())
            .finish_non_exhaustive()
    }
}

impl Drop for Hooked {
    fn drop(&mut self) {
        let links = std::mem::take(&mut self.links);
        if self.leave.load(Ordering::Relaxed) {
            std::mem::forget(links);
        } else if let Err(mpsc::SendError(links)) = self.dropper.send(links) {
            // The process is ending: its exit closes them.
            std::mem::forget(links);
        }
    }
}

impl SyncHooks {
    /// `ebpf` holds the loaded (not attached) [`PROGRAM`]; `multi`, the
    /// same program loaded for multi-uprobe links, if the kernel has them.
    pub fn new(ebpf: Arc<Mutex<Ebpf>>, multi: Option<OwnedFd>) -> SyncHooks {
        let (dropper, links) = mpsc::channel::<Vec<Link>>();
        let leave = Arc::new(AtomicBool::new(false));
        let attaching = Arc::new(AtomicUsize::new(0));
        let (left, busy) = (leave.clone(), attaching.clone());
        let _ = std::thread::Builder::new()
            .name("uniplay-unhook".into())
            .spawn(move || {
                for link in links.into_iter().flatten() {
                    while busy.load(Ordering::Relaxed) > 0 && !left.load(Ordering::Relaxed) {
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    }
                    if left.load(Ordering::Relaxed) {
                        std::mem::forget(link);
                    } else {
                        drop(link);
                    }
                }
            });
        SyncHooks {
            ebpf,
            libs: HashMap::new(),
            dropper,
            multi,
            leave,
            attaching,
        }
    }

    /// From now on links are not detached but left open (leaked) for the
    /// recorder's exit: each detach holds the kernel's trace-event lock
    /// through RCU grace periods (about 0.1 s per probe here, 24 per
    /// process), and the recorder hands what it has open at the end to a
    /// background process that closes it after uniplay has exited
    /// (`Probe::detach_in_background`), instead of keeping the user
    /// waiting.
    pub fn leave_to_exit(&self) {
        self.leave.store(true, Ordering::Relaxed);
    }

    /// Probes the synchronisation functions of the C library (and
    /// libpthread, where older ones keep them) that `pid` has mapped.
    /// `Ok(None)`: it maps none (a static binary, another libc).
    pub fn attach(&mut self, pid: u32) -> Result<Option<Hooked>, String> {
        let maps = sys::maps(pid).map_err(|e| format!("reading its maps: {e}"))?;
        let attaching = self.attaching.clone();
        let _busy = Attaching::new(&attaching);
        let mut libs: Vec<&str> = maps
            .iter()
            .map(|m| m.path.as_str())
            .filter(|p| is_sync_library(p))
            .collect();
        libs.sort_unstable();
        libs.dedup();
        let mut hooked = Hooked {
            links: Vec::new(),
            dropper: self.dropper.clone(),
            leave: self.leave.clone(),
        };
        for lib in libs {
            let entries = self.entries(Path::new(lib))?;
            let mapped: Vec<Entry> = entries
                .iter()
                .filter(|e| {
                    maps.iter().any(|m| {
                        m.path == lib
                            && m.perms.contains('x')
                            && (m.offset..m.offset + (m.end - m.start)).contains(&e.offset)
                    })
                })
                .copied()
                .collect();
            if mapped.is_empty() {
                continue;
            }
            match &self.multi {
                Some(prog) => hooked
                    .links
                    .push(Link::Multi(attach_multi(prog, lib, &mapped, pid)?)),
                None => self.attach_each(lib, &mapped, pid, &mut hooked.links)?,
            }
        }
        Ok((!hooked.links.is_empty()).then_some(hooked))
    }

    /// One perf-event uprobe per function (each attach and detach takes the
    /// kernel's trace-event lock).
    fn attach_each(
        &self,
        lib: &str,
        entries: &[Entry],
        pid: u32,
        links: &mut Vec<Link>,
    ) -> Result<(), String> {
        let mut ebpf = self.ebpf.lock().unwrap_or_else(|e| e.into_inner());
        let prog: &mut UProbe = ebpf
            .program_mut(PROGRAM)
            .ok_or("the sync probe program is missing")?
            .try_into()
            .map_err(|e| format!("{e}"))?;
        let scope = UProbeScope::OneProcess(
            std::num::NonZeroU32::new(pid).ok_or("process 0 cannot be probed")?,
        );
        for e in entries {
            let point = UProbeAttachPoint {
                location: UProbeAttachLocation::AbsoluteOffset(e.offset),
                cookie: Some(e.op.into()),
            };
            let id = prog
                .attach(point, lib, scope)
                .map_err(|err| format!("probing {lib}: {err}"))?;
            links.push(Link::Single(
                prog.take_link(id).map_err(|err| format!("{err}"))?,
            ));
        }
        Ok(())
    }

    /// The addresses in `maps` of every function probed in any process,
    /// with the bytes a probe replaces there (sorted): whether or not this
    /// process is probed (a child forked from a probed one has the
    /// breakpoints in its copy of the pages until it runs into them).
    pub fn points_in(&self, maps: &[sys::MapEntry]) -> Vec<(u64, u8)> {
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

/// One multi-uprobe link on every function of `entries` in `lib`, for
/// process `pid` only.
fn attach_multi(prog: &OwnedFd, lib: &str, entries: &[Entry], pid: u32) -> Result<OwnedFd, String> {
    let path = CString::new(lib).map_err(|_| format!("{lib}: a NUL in the path"))?;
    let offsets: Vec<u64> = entries.iter().map(|e| e.offset).collect();
    let cookies: Vec<u64> = entries.iter().map(|e| e.op.into()).collect();
    sys::bpf::link_uprobe_multi(prog.as_fd(), &path, &offsets, &cookies, pid)
        .map_err(|e| format!("probing {lib}: {e}"))
}

/// Loads [`PROGRAM`] a second time, from the eBPF object `object`, as a
/// multi-uprobe program (aya 0.14 loads uprobes for perf-event links only),
/// its map references resolved to the maps `ebpf` created: their
/// descriptors come from the kernel, through the programs aya loaded.
/// `Err`: the kernel has no multi-uprobe links (before 6.6), or the object
/// could not be prepared; probes are then attached one by one.
pub fn load_multi(ebpf: &Ebpf, object: &[u8]) -> Result<OwnedFd, String> {
    let mut ids = std::collections::BTreeSet::new();
    for (_, p) in ebpf.programs() {
        let Ok(prog) = p.fd() else { continue };
        ids.extend(sys::bpf::prog_map_ids(prog.as_fd()).map_err(|e| format!("program info: {e}"))?);
    }
    let mut fds: HashMap<String, OwnedFd> = HashMap::new();
    for id in ids {
        let (fd, name) = sys::bpf::map_by_id(id).map_err(|e| format!("map {id}: {e}"))?;
        fds.insert(name, fd);
    }
    let mut obj = aya_obj::Object::parse(object).map_err(|e| e.to_string())?;
    let defs = obj.maps.clone();
    // The kernel keeps the first 15 bytes of a map's name.
    let short = |name: &str| name.get(..15).unwrap_or(name).to_string();
    let refs = defs.iter().filter_map(|(name, def)| {
        fds.get(&short(name))
            .map(|fd| (name.as_str(), fd.as_raw_fd(), def))
    });
    let text_sections = obj.functions.keys().map(|&(section, _)| section).collect();
    obj.relocate_maps(refs, &text_sections)
        .map_err(|e| e.to_string())?;
    obj.relocate_calls(&text_sections)
        .map_err(|e| e.to_string())?;
    let prog = obj
        .programs
        .get(PROGRAM)
        .ok_or("no sync probe program in the object")?;
    let function = obj
        .functions
        .get(&prog.function_key())
        .ok_or("the sync probe program has no code")?;
    sys::bpf::load_uprobe_multi_program(&function.instructions, PROGRAM)
        .map_err(|e| format!("loading it for multi-uprobe links: {e}"))
}

/// Counts an attach under way while it lives.
struct Attaching<'a>(&'a AtomicUsize);

impl<'a> Attaching<'a> {
    fn new(n: &'a AtomicUsize) -> Self {
        n.fetch_add(1, Ordering::Relaxed);
        Attaching(n)
    }
}

impl Drop for Attaching<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
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

/// Puts back, in `page` (read at `addr`), the bytes the probes replaced.
/// Returns whether it changed anything.
pub fn unprobe_page(points: &[(u64, u8)], addr: u64, page: &mut [u8]) -> bool {
    let end = addr + page.len() as u64;
    let from = points.partition_point(|&(a, _)| a < addr);
    let mut changed = false;
    for &(a, byte) in points[from..].iter().take_while(|&&(a, _)| a < end) {
        let b = &mut page[(a - addr) as usize];
        changed |= *b != byte;
        *b = byte;
    }
    changed
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
    fn unprobe_page_puts_back_only_points_inside() {
        let points = [(0x0fff, 1), (0x1000, 2), (0x1ffe, 3), (0x2000, 4)];
        let mut page = vec![0xcc; 0x1000];
        assert!(unprobe_page(&points, 0x1000, &mut page));
        assert_eq!((page[0], page[0xffe], page[0xfff]), (2, 3, 0xcc));
        assert!(!unprobe_page(&points, 0x1000, &mut page));
    }

    #[test]
    fn sync_libraries() {
        assert!(is_sync_library("/lib/x86_64-linux-gnu/libc.so.6"));
        assert!(is_sync_library("/lib64/libpthread.so.0"));
        assert!(!is_sync_library("/usr/lib/libcrypto.so.3"));
        assert!(!is_sync_library("[vdso]"));
    }
}
