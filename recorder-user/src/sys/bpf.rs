//! The `bpf(2)` commands aya 0.14 does not offer, for multi-uprobe links
//! (Linux 6.6+): one link puts a whole list of uprobes on one process, and
//! detaches them with one RCU wait instead of one per probe under the
//! kernel's trace-event lock (see `sync_hook`).
//!
//! Each attribute block is the kernel's `union bpf_attr` member for the
//! command, laid out as in `include/uapi/linux/bpf.h` and zero-padded: the
//! kernel rejects non-zero bytes past the fields it knows.

use std::{
    ffi::CStr,
    io,
    mem::offset_of,
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
};

use aya_obj::generated::{bpf_insn, bpf_map_info, bpf_prog_info};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_MAP_GET_FD_BY_ID: libc::c_long = 14;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_CREATE: libc::c_long = 28;

const BPF_PROG_TYPE_KPROBE: u32 = 2;
/// `enum bpf_attach_type`: BPF_TRACE_UPROBE_MULTI.
pub const BPF_TRACE_UPROBE_MULTI: u32 = 48;

/// Room for any attribute block used here (the kernel's union is larger;
/// what is not passed counts as zero).
const ATTR_BYTES: usize = 128;

#[repr(C, align(8))]
struct Attr([u8; ATTR_BYTES]);

impl Attr {
    fn new() -> Attr {
        Attr([0; ATTR_BYTES])
    }
    fn u32_at(&mut self, off: usize, v: u32) -> &mut Attr {
        self.0[off..off + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn u64_at(&mut self, off: usize, v: u64) -> &mut Attr {
        self.0[off..off + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }
}

fn bpf(cmd: libc::c_long, attr: &mut Attr) -> io::Result<i64> {
    // SAFETY: `attr` is a valid, writable block of ATTR_BYTES bytes laid out
    // for `cmd`; every pointer stored in it outlives the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.0.as_mut_ptr(),
            ATTR_BYTES as libc::c_uint,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn owned(fd: i64) -> OwnedFd {
    // SAFETY: the kernel just returned this new descriptor; nothing else
    // owns it.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

/// `BPF_OBJ_GET_INFO_BY_FD` into `info` (a `bpf_prog_info` or
/// `bpf_map_info` prefix).
fn object_info(fd: BorrowedFd<'_>, info: &mut [u8]) -> io::Result<()> {
    let mut attr = Attr::new();
    attr.u32_at(0, fd.as_raw_fd() as u32)
        .u32_at(4, info.len() as u32)
        .u64_at(8, info.as_mut_ptr() as u64);
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr).map(|_| ())
}

const NR_MAP_IDS: usize = offset_of!(bpf_prog_info, nr_map_ids);
const MAP_IDS: usize = offset_of!(bpf_prog_info, map_ids);
const MAP_NAME: usize = offset_of!(bpf_map_info, name);

/// The ids of the maps a loaded program uses.
pub fn prog_map_ids(prog: BorrowedFd<'_>) -> io::Result<Vec<u32>> {
    let mut info = [0u8; MAP_IDS + 8];
    object_info(prog, &mut info)?;
    let n = u32::from_ne_bytes(
        info[NR_MAP_IDS..NR_MAP_IDS + 4]
            .try_into()
            .expect("4 bytes"),
    );
    let mut ids = vec![0u32; n as usize];
    let mut info = [0u8; MAP_IDS + 8];
    info[NR_MAP_IDS..NR_MAP_IDS + 4].copy_from_slice(&n.to_ne_bytes());
    info[MAP_IDS..MAP_IDS + 8].copy_from_slice(&(ids.as_mut_ptr() as u64).to_ne_bytes());
    object_info(prog, &mut info)?;
    Ok(ids)
}

/// A new descriptor for the map with this id, and its name.
pub fn map_by_id(id: u32) -> io::Result<(OwnedFd, String)> {
    let mut attr = Attr::new();
    attr.u32_at(0, id);
    let fd = owned(bpf(BPF_MAP_GET_FD_BY_ID, &mut attr)?);
    let mut info = [0u8; MAP_NAME + 16];
    object_info(fd.as_fd(), &mut info)?;
    let name = CStr::from_bytes_until_nul(&info[MAP_NAME..])
        .map(|c| c.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok((fd, name))
}

/// Loads a kprobe-type program for multi-uprobe links. `insns` have their
/// map references resolved.
pub fn load_uprobe_multi_program(insns: &[bpf_insn], name: &str) -> io::Result<OwnedFd> {
    let license = c"GPL";
    let mut prog_name = [0u8; 16];
    for (d, s) in prog_name.iter_mut().zip(name.bytes().take(15)) {
        *d = s;
    }
    let mut attr = Attr::new();
    attr.u32_at(0, BPF_PROG_TYPE_KPROBE)
        .u32_at(4, insns.len() as u32)
        .u64_at(8, insns.as_ptr() as u64)
        .u64_at(16, license.as_ptr() as u64)
        .u32_at(68, BPF_TRACE_UPROBE_MULTI);
    attr.0[48..64].copy_from_slice(&prog_name);
    bpf(BPF_PROG_LOAD, &mut attr).map(owned)
}

/// Attaches `prog` at `offsets` of the file `path` (with a cookie each) in
/// process `pid` only.
pub fn link_uprobe_multi(
    prog: BorrowedFd<'_>,
    path: &CStr,
    offsets: &[u64],
    cookies: &[u64],
    pid: u32,
) -> io::Result<OwnedFd> {
    assert_eq!(offsets.len(), cookies.len(), "one cookie per offset");
    // link_create: prog_fd 0, target_fd 4, attach_type 8, flags 12, then
    // uprobe_multi: path 16, offsets 24, ref_ctr_offsets 32, cookies 40,
    // cnt 48, flags 52, pid 56.
    let mut attr = Attr::new();
    attr.u32_at(0, prog.as_raw_fd() as u32)
        .u32_at(8, BPF_TRACE_UPROBE_MULTI)
        .u64_at(16, path.as_ptr() as u64)
        .u64_at(24, offsets.as_ptr() as u64)
        .u64_at(40, cookies.as_ptr() as u64)
        .u32_at(48, offsets.len() as u32)
        .u32_at(56, pid);
    bpf(BPF_LINK_CREATE, &mut attr).map(owned)
}
