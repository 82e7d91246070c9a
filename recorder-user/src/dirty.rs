//! Which pages of a process were written since its previous checkpoint,
//! known without forking it.
//!
//! A copy-on-write snapshot (fork) stops the target for as long as the
//! kernel takes to copy its page tables: about 16 ms per GiB resident
//! here, however little it wrote. A tracked process instead has its memory
//! write-protected in asynchronous mode ([`crate::sys::uffd`]): at a cut,
//! one scan lists the pages written since the previous cut and protects
//! them again; when those are few they are copied there and then, and the
//! stop grows with the pages written rather than with resident memory.
//!
//! A tracker's life, per process image:
//! 1. At a checkpoint taken by fork, the process is big enough
//!    ([`TrackWrites::wants`]): a userfaultfd is created inside it.
//! 2. After the target resumes, its mappings are registered and
//!    protected. Writes between that cut and the protection are unknown,
//!    so the tracker is not yet `synced`.
//! 3. The next checkpoint forks again, reads everything (as untracked
//!    processes do), and its scan re-arms protection at the cut: `synced`.
//! 4. From then on every checkpoint scans; written ranges of mappings made
//!    since registration (the scan refuses them) count as wholly written
//!    and are registered after the target resumes.
//!
//! An exec drops the tracker (the memory it watched is gone).

use std::{io, os::fd::OwnedFd};

use crate::sys::uffd::{Pagemap, WriteProtect};

/// `uniplay record --track-writes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TrackWrites {
    /// Processes with at least [`AUTO_MIN_RESIDENT`] resident, and those
    /// checkpointed before in their current image (a shell running
    /// commands is checkpointed at each of their execs). Not a process
    /// caught once and gone (a command the shell runs): tracking only pays
    /// from its third checkpoint.
    #[default]
    Auto,
    /// Every process (tests use it to exercise tracking on small ones).
    Always,
    /// None: every checkpoint forks.
    Never,
}

/// Below this, a fork snapshot costs well under a millisecond and
/// tracking would only add the arming work.
pub const AUTO_MIN_RESIDENT: u64 = 16 << 20;

impl TrackWrites {
    /// `again`: the process was checkpointed before in this image.
    pub fn wants(self, resident: u64, again: bool) -> bool {
        match self {
            TrackWrites::Auto => again || resident >= AUTO_MIN_RESIDENT,
            TrackWrites::Always => true,
            TrackWrites::Never => false,
        }
    }
}

/// Whether to copy `written` bytes while the target is stopped rather
/// than fork it. Copying runs at roughly 1/16 of the speed at which fork
/// copies page tables per byte resident (measured: ~4 GB/s vs ~16 ms/GiB),
/// plus fork's fixed cost of about one MiB's copy.
pub fn copy_while_stopped(written: u64, resident: u64) -> bool {
    written <= resident / 16 + (1 << 20)
}

/// Total bytes of a list of ranges.
pub fn bytes(ranges: &[(u64, u64)]) -> u64 {
    ranges.iter().map(|(s, e)| e - s).sum()
}

/// Sorted, merged, without empty ranges.
pub fn normalize(mut v: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    v.retain(|(s, e)| s < e);
    v.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(v.len());
    for (s, e) in v {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

/// `a ∩ b` (both normalized).
pub fn intersect(a: &[(u64, u64)], b: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() && j < b.len() {
        let (s, e) = (a[i].0.max(b[j].0), a[i].1.min(b[j].1));
        if s < e {
            out.push((s, e));
        }
        if a[i].1 < b[j].1 {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// `a − b` (both normalized).
pub fn subtract(a: &[(u64, u64)], b: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut j = 0;
    for &(mut s, e) in a {
        while j < b.len() && b[j].1 <= s {
            j += 1;
        }
        let mut k = j;
        while k < b.len() && b[k].0 < e {
            if b[k].0 > s {
                out.push((s, b[k].0));
            }
            s = s.max(b[k].1);
            k += 1;
        }
        if s < e {
            out.push((s, e));
        }
    }
    out
}

/// Copies made earlier, (address, offset, length), cut down to the parts
/// inside `keep` (normalized).
pub fn pieces_within(
    pieces: &[(u64, usize, usize)],
    keep: &[(u64, u64)],
) -> Vec<(u64, usize, usize)> {
    let mut out = Vec::new();
    for &(addr, off, len) in pieces {
        for (s, e) in intersect(&[(addr, addr + len as u64)], keep) {
            out.push((s, off + (s - addr) as usize, (e - s) as usize));
        }
    }
    out
}

/// What one scan at a cut found.
#[derive(Debug, Default)]
pub struct Scan {
    /// Written since the previous cut (whole mappings for unregistered
    /// ones), sorted, page-aligned.
    pub written: Vec<(u64, u64)>,
    /// Mappings the scan refused: to register once the target runs.
    pub unregistered: Vec<(u64, u64)>,
}

#[derive(Debug)]
pub struct Tracker {
    wp: WriteProtect,
    pagemap: Pagemap,
    /// Its mappings were registered and protected (scans mean something).
    pub armed: bool,
    /// Protection was (re-)armed at the previous cut: the scan is exact.
    pub synced: bool,
}

impl Tracker {
    /// `uffd`: the process's userfaultfd, taken out of it.
    pub fn new(pid: u32, uffd: OwnedFd) -> io::Result<Tracker> {
        Ok(Tracker {
            wp: WriteProtect::new(uffd)?,
            pagemap: Pagemap::open(pid)?,
            armed: false,
            synced: false,
        })
    }

    /// Registers and protects `mappings` (the target may be running; the
    /// tracker stays unsynced). Mappings the kernel refuses (e.g. the
    /// vDSO) are left out; scans will count them as wholly written.
    pub fn arm(&mut self, mappings: &[(u64, u64)]) {
        for &(s, e) in mappings {
            if self.wp.register(s, e).is_ok() {
                let _ = self.wp.protect(s, e);
            }
        }
        self.armed = true;
        self.synced = false;
    }

    /// Registers mappings made since arming. Their pages scan as written
    /// until the next scan protects them.
    pub fn register(&self, mappings: &[(u64, u64)]) {
        for &(s, e) in mappings {
            let _ = self.wp.register(s, e);
        }
    }

    /// At a cut (target stopped): the written ranges of `mappings`, which
    /// are protected again.
    pub fn scan(&self, mappings: &[(u64, u64)]) -> Scan {
        let mut scan = Scan::default();
        for &(s, e) in mappings {
            let before = scan.written.len();
            if self.pagemap.take_written(s, e, &mut scan.written).is_err() {
                scan.written.truncate(before);
                scan.written.push((s, e));
                scan.unregistered.push((s, e));
            }
        }
        scan
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dirty_auto_tracks_big_or_long_lived_processes() {
        assert!(!TrackWrites::Auto.wants(1 << 20, false));
        assert!(TrackWrites::Auto.wants(1 << 20, true));
        assert!(TrackWrites::Auto.wants(AUTO_MIN_RESIDENT, false));
        assert!(TrackWrites::Always.wants(0, false));
        assert!(!TrackWrites::Never.wants(u64::MAX, true));
    }

    #[test]
    fn dirty_copy_or_fork() {
        const MIB: u64 = 1 << 20;
        // The benchmark's case: 10 MiB written of 1 GiB is copied.
        assert!(copy_while_stopped(10 * MIB, 1024 * MIB));
        // Most of a process rewritten: fork.
        assert!(!copy_while_stopped(900 * MIB, 1024 * MIB));
        assert!(!copy_while_stopped(20 * MIB, 100 * MIB));
        // Tiny writes are always copied.
        assert!(copy_while_stopped(MIB, 0));
        assert_eq!(bytes(&[(0, 4096), (8192, 16384)]), 12288);
    }

    #[test]
    fn dirty_range_sets() {
        let a = normalize(vec![(30, 40), (0, 10), (5, 20), (50, 50)]);
        assert_eq!(a, vec![(0, 20), (30, 40)]);
        let b = vec![(10, 35)];
        assert_eq!(intersect(&a, &b), vec![(10, 20), (30, 35)]);
        assert_eq!(subtract(&a, &b), vec![(0, 10), (35, 40)]);
        assert_eq!(subtract(&a, &[]), a);
        assert_eq!(
            subtract(&[(0, 100)], &[(10, 20), (30, 40)]),
            vec![(0, 10), (20, 30), (40, 100)]
        );
        assert!(intersect(&a, &[]).is_empty());
        // A copy of [100, 200) at offset 1000, keeping [150, 300).
        assert_eq!(
            pieces_within(&[(100, 1000, 100)], &[(150, 300)]),
            vec![(150, 1050, 50)]
        );
    }
}
