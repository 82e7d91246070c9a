//! Write tracking from outside the target: a userfaultfd in asynchronous
//! write-protect mode over the target's memory (the kernel resolves each
//! first write itself and clears the page's protection), read back and
//! re-armed in one PAGEMAP_SCAN ioctl on /proc/PID/pagemap.
//!
//! The userfaultfd is created inside the target (an injected syscall: a
//! userfaultfd belongs to the memory of the process that creates it) and
//! taken out with pidfd_getfd; every ioctl below then works on the
//! target's memory from here.

use std::{
    fs::File,
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

/// `userfaultfd(2)` flags for the injected call: close on exec, and user
/// mode only, which lets an unprivileged target create one whatever
/// vm.unprivileged_userfaultfd says (write-protect faults in async mode
/// never reach the userfaultfd, so kernel-mode writes are unaffected).
pub const USERFAULTFD_FLAGS: u64 = libc::O_CLOEXEC as u64 | libc::O_NONBLOCK as u64 | 1;
pub const SYS_USERFAULTFD: u64 = 323;

const UFFD_API: u64 = 0xAA;
const UFFD_FEATURE_WP_UNPOPULATED: u64 = 1 << 13;
const UFFD_FEATURE_WP_ASYNC: u64 = 1 << 15;
const UFFDIO_REGISTER_MODE_WP: u64 = 2;
const UFFDIO_WRITEPROTECT_MODE_WP: u64 = 1;
// _IOWR(0xAA, nr, size) and _IOWR('f', 16, struct pm_scan_arg).
const UFFDIO_API: u64 = 0xc018_aa3f;
const UFFDIO_REGISTER: u64 = 0xc020_aa00;
const UFFDIO_WRITEPROTECT: u64 = 0xc018_aa06;
const PAGEMAP_SCAN: u64 = 0xc060_6610;

const PM_SCAN_WP_MATCHING: u64 = 1;
const PM_SCAN_CHECK_WPASYNC: u64 = 2;
const PAGE_IS_WRITTEN: u64 = 1 << 1;

#[repr(C)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

#[repr(C)]
struct UffdioRegister {
    start: u64,
    len: u64,
    mode: u64,
    ioctls: u64,
}

#[repr(C)]
struct UffdioWriteprotect {
    start: u64,
    len: u64,
    mode: u64,
}

#[repr(C)]
struct PmScanArg {
    size: u64,
    flags: u64,
    start: u64,
    end: u64,
    walk_end: u64,
    vec: u64,
    vec_len: u64,
    max_pages: u64,
    category_inverted: u64,
    category_mask: u64,
    category_anyof_mask: u64,
    return_mask: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct PageRegion {
    start: u64,
    end: u64,
    categories: u64,
}

// The ioctl numbers above encode these sizes.
const _: () = assert!(std::mem::size_of::<UffdioApi>() == 24);
const _: () = assert!(std::mem::size_of::<UffdioRegister>() == 32);
const _: () = assert!(std::mem::size_of::<UffdioWriteprotect>() == 24);
const _: () = assert!(std::mem::size_of::<PmScanArg>() == 96);

fn ioctl<T>(fd: &impl AsRawFd, req: u64, arg: &mut T) -> io::Result<i32> {
    // SAFETY: `arg` is the #[repr(C)] struct whose size `req` encodes, and
    // lives across the call; the kernel writes at most that struct (and,
    // for PAGEMAP_SCAN, the `vec` buffer the caller sized).
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req as _, arg as *mut T) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// A copy of descriptor `fd` of process `pid` (PTRACE_MODE_ATTACH: we are
/// its tracer).
pub fn take_fd(pid: u32, fd: u32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscalls; on success each returns a new descriptor that
    // nothing else owns.
    unsafe {
        let pidfd = libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0);
        if pidfd < 0 {
            return Err(io::Error::last_os_error());
        }
        let pidfd = OwnedFd::from_raw_fd(pidfd as i32);
        let got = libc::syscall(
            libc::SYS_pidfd_getfd,
            pidfd.as_raw_fd(),
            fd as libc::c_int,
            0,
        );
        if got < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(got as i32))
    }
}

/// A target's userfaultfd, set up for asynchronous write protection.
#[derive(Debug)]
pub struct WriteProtect(OwnedFd);

impl WriteProtect {
    /// Negotiates the API on a fresh userfaultfd. `WP_UNPOPULATED` makes
    /// protection cover pages not yet faulted in, so a first touch after
    /// arming counts as a write too.
    pub fn new(uffd: OwnedFd) -> io::Result<WriteProtect> {
        let mut api = UffdioApi {
            api: UFFD_API,
            features: UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED,
            ioctls: 0,
        };
        ioctl(&uffd, UFFDIO_API, &mut api)?;
        Ok(WriteProtect(uffd))
    }

    /// Registers `[start, end)` (one mapping) for write protection. Its
    /// pages are not protected yet: until then they all scan as written.
    pub fn register(&self, start: u64, end: u64) -> io::Result<()> {
        let mut r = UffdioRegister {
            start,
            len: end - start,
            mode: UFFDIO_REGISTER_MODE_WP,
            ioctls: 0,
        };
        ioctl(&self.0, UFFDIO_REGISTER, &mut r).map(drop)
    }

    /// Write-protects every page of the registered `[start, end)`.
    pub fn protect(&self, start: u64, end: u64) -> io::Result<()> {
        let mut w = UffdioWriteprotect {
            start,
            len: end - start,
            mode: UFFDIO_WRITEPROTECT_MODE_WP,
        };
        ioctl(&self.0, UFFDIO_WRITEPROTECT, &mut w).map(drop)
    }
}

/// /proc/PID/pagemap of one process image (it stays bound to the memory
/// it was opened on: reopen after an exec).
#[derive(Debug)]
pub struct Pagemap(File);

impl Pagemap {
    pub fn open(pid: u32) -> io::Result<Pagemap> {
        File::open(format!("/proc/{pid}/pagemap")).map(Pagemap)
    }

    /// Appends to `out` the ranges of `[start, end)` written since they
    /// were last protected, and protects them again, atomically per page.
    /// Fails with EPERM, having changed nothing, when the range is not
    /// registered for asynchronous write protection (a mapping made or
    /// moved since registration).
    pub fn take_written(&self, start: u64, end: u64, out: &mut Vec<(u64, u64)>) -> io::Result<()> {
        const VEC: usize = 256;
        let mut regions = [PageRegion::default(); VEC];
        let mut from = start;
        while from < end {
            let mut arg = PmScanArg {
                size: std::mem::size_of::<PmScanArg>() as u64,
                flags: PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC,
                start: from,
                end,
                walk_end: 0,
                vec: regions.as_mut_ptr() as u64,
                vec_len: VEC as u64,
                max_pages: 0,
                category_inverted: 0,
                category_mask: PAGE_IS_WRITTEN,
                category_anyof_mask: 0,
                return_mask: PAGE_IS_WRITTEN,
            };
            let n = ioctl(&self.0, PAGEMAP_SCAN, &mut arg)? as usize;
            out.extend(regions[..n.min(VEC)].iter().map(|r| (r.start, r.end)));
            if arg.walk_end <= from {
                break;
            }
            from = arg.walk_end;
        }
        Ok(())
    }
}
