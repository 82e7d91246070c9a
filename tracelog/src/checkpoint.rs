//! Checkpoints: `checkpoints/NNNNNN/{state.json,pages.tlf,base.tlf}` and the
//! content-addressed `files/` store. docs/FORMAT.md is the normative
//! description.
//!
//! A checkpoint stores the process tree's state (JSON) and the memory pages
//! that changed since the previous checkpoint. The full image of a process at
//! epoch `e` is rebuilt by applying the pages of earlier checkpoints in order
//! (see [`Trace::checkpoint_memory`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::codec::{build_frame, check_file_header, file_header, FrameHeader, FILE_HEADER_LEN};
use crate::codec::{FRAME_HEADER_LEN, MAX_UNCOMPRESSED, PAGES_MAGIC};
use crate::meta::{sync_dir, write_atomic};
use crate::reader::{numbered_name, read_frame_payload, scan_frames};
use crate::{Error, Trace};

pub(crate) const CHECKPOINTS_DIR: &str = "checkpoints";
pub(crate) const FILES_DIR: &str = "files";
const STATE_FILE: &str = "state.json";
const PAGES_FILE: &str = "pages.tlf";
/// Pages inherited from deleted older checkpoints (written by a rebase).
const BASE_FILE: &str = "base.tlf";

/// Size of a memory page in `pages.tlf`.
pub const PAGE_SIZE: usize = 4096;
/// Pages per frame written (1 MiB of page data).
const PAGES_PER_FRAME: usize = 256;
/// Bytes per page in a frame payload: pid u32 + addr u64 + data.
const PAGE_RECORD: usize = 4 + 8 + PAGE_SIZE;
/// A state.json larger than this is not one we wrote.
const MAX_STATE_BYTES: u64 = 256 << 20;
/// Page frames are compressed while the recorder's supervisor waits (and
/// the target with it, at its next stop): level 1 took an exec-heavy
/// recording (pyenv's python3 shim, 39 execs) from 1.28 s to 1.05 s for 9%
/// more checkpoint bytes than level 3.
const ZSTD_LEVEL: i32 = 1;

/// A consistent snapshot of the whole process tree, taken while all its
/// threads were stopped, at the start of epoch `epoch`
/// (`checkpoints/NNNNNN/state.json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Checkpoint {
    pub epoch: u32,
    /// CLOCK_MONOTONIC at the cut.
    pub time_ns: u64,
    /// Seq of the epoch's `EpochMark` event.
    pub first_seq: u64,
    /// How long the target was stopped for the checkpoint.
    pub stop_ns: u64,
    /// "start", "timer", "events", "exec", ...
    pub reason: String,
    pub processes: Vec<ProcessState>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProcessState {
    pub pid: u32,
    pub ppid: u32,
    pub exe: String,
    pub cwd: String,
    pub maps: Vec<Mapping>,
    pub threads: Vec<ThreadState>,
    pub fds: Vec<FdState>,
    pub sigactions: Vec<SigAction>,
    /// Pages written for this checkpoint (changed since the previous one);
    /// set by [`PageSink::finish`] to the number actually stored.
    pub pages_stored: u64,
    /// This checkpoint stores every page of the process's stored mappings
    /// (first checkpoint of a process, or after an exec): readers do not
    /// inherit pages from older checkpoints for it. Addition to the brief.
    pub full: bool,
    /// How its private memory was captured: "fork" (copy-on-write
    /// snapshot read after the target resumed), "tracked" (the pages written
    /// since the previous checkpoint, known by write tracking, copied while
    /// stopped), "stopped" (all read while stopped: no thread could be
    /// made to fork). Empty in traces from before it was recorded.
    pub memory: String,
}

/// One line of `/proc/PID/maps`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    /// As in /proc/PID/maps: "r-xp".
    pub perms: String,
    pub offset: u64,
    pub dev: String,
    pub inode: u64,
    /// `""` for anonymous, `"[heap]"`, `"[stack]"`, `"[vdso]"`, or a file path.
    pub path: String,
    /// Content hash of the copy of the backing file in `files/`, if copied
    /// (see [`CheckpointWriter::add_file`]).
    pub file: Option<String>,
    /// Its contents are in the checkpoint pages (private or writable
    /// mappings).
    pub stored: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ThreadState {
    pub tid: u32,
    /// x86-64 `user_regs_struct`, 27 words, in kernel order.
    pub regs: Vec<u64>,
    /// XSAVE area (NT_X86_XSTATE) or FXSAVE (512 bytes).
    pub fpregs: Vec<u8>,
    pub sigmask: u64,
    /// Syscall number the thread is stopped in, if any.
    pub syscall: Option<i64>,
    /// The thread's rseq area (address, length; 0 if none): the kernel
    /// writes the thread's CPU number there.
    pub rseq: (u64, u32),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FdState {
    pub fd: i32,
    pub path: String,
    pub pos: u64,
    pub flags: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SigAction {
    pub sig: u32,
    pub handler: u64,
    pub flags: u64,
    pub restorer: u64,
    pub mask: u64,
}

/// Summary of a stored checkpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CheckpointInfo {
    pub epoch: u32,
    pub time_ns: u64,
    /// Pages stored by this checkpoint itself (pages.tlf).
    pub pages: u64,
    /// Bytes on disk (state.json, pages.tlf and base.tlf).
    pub bytes: u64,
    pub stop_ns: u64,
    pub threads: u32,
    pub processes: u32,
}

pub(crate) fn checkpoint_dir(dir: &Path, epoch: u32) -> PathBuf {
    dir.join(CHECKPOINTS_DIR).join(format!("{epoch:06}"))
}

pub(crate) fn is_complete(dir: &Path, epoch: u32) -> bool {
    checkpoint_dir(dir, epoch).join(STATE_FILE).is_file()
}

/// Numbered checkpoint directories, sorted, with "complete" flags.
fn list(dir: &Path) -> Result<Vec<(u32, bool)>, Error> {
    let cdir = dir.join(CHECKPOINTS_DIR);
    let entries = match fs::read_dir(&cdir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("list", &cdir, e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list", &cdir, e))?;
        if let Some(n) = numbered_name(&entry.file_name(), "") {
            out.push((n, entry.path().join(STATE_FILE).is_file()));
        }
    }
    out.sort_unstable();
    Ok(out)
}

fn read_state(dir: &Path, epoch: u32) -> Result<Checkpoint, Error> {
    let path = checkpoint_dir(dir, epoch).join(STATE_FILE);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::NoCheckpoint { epoch })
        }
        Err(e) => return Err(Error::io("open", path, e)),
    };
    let len = file
        .metadata()
        .map_err(|e| Error::io("stat", &path, e))?
        .len();
    if len > MAX_STATE_BYTES {
        return Err(Error::corrupt(path, 0, format!("{len} bytes is too large")));
    }
    let mut text = Vec::with_capacity(len as usize);
    (&file)
        .take(MAX_STATE_BYTES)
        .read_to_end(&mut text)
        .map_err(|e| Error::io("read", &path, e))?;
    serde_json::from_slice(&text).map_err(|source| Error::Meta { path, source })
}

// ---- page files -----------------------------------------------------------

/// Appends page frames to a `pages.tlf`-format file. Frames are compressed
/// and written by a thread of their own (`FrameWriter`), so the caller (the
/// recorder's supervisor, which the target waits on at its next stop) only
/// gathers pages.
#[derive(Debug)]
struct PageFileWriter {
    path: PathBuf,
    epoch: u32,
    pids: Vec<u8>,
    addrs: Vec<u8>,
    data: Vec<u8>,
    batched: usize,
    /// Pages handed on (also the next frame's first_seq).
    pages: u64,
    /// Frames to compress and write. Invariant: bounded to `FRAMES_QUEUED`,
    /// so the pages held in memory stay a few frames' worth.
    frames: std::sync::mpsc::SyncSender<ToWrite>,
    /// Returns the file's length once every frame is written.
    writer: std::thread::JoinHandle<Result<(File, u64), Error>>,
}

/// Frames waiting for the compressing thread (see `PageFileWriter`).
const FRAMES_QUEUED: usize = 2;

/// What a `PageFileWriter` hands its compressing thread.
enum ToWrite {
    Frame(FrameHeader, Vec<u8>),
    /// Answered once everything before it is written.
    Settle(std::sync::mpsc::SyncSender<()>),
}

impl PageFileWriter {
    fn create(path: PathBuf, epoch: u32) -> Result<Self, Error> {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| Error::io("create", &path, e))?;
        file.write_all(&file_header(PAGES_MAGIC))
            .map_err(|e| Error::io("write", &path, e))?;
        let (frames, queued) = std::sync::mpsc::sync_channel(FRAMES_QUEUED);
        let theirs = path.clone();
        let writer = std::thread::Builder::new()
            .name("tracelog-pages".into())
            .spawn(move || write_frames(file, &theirs, queued))
            .map_err(|e| Error::io("start the page writer for", &path, e))?;
        Ok(PageFileWriter {
            path,
            epoch,
            pids: Vec::new(),
            addrs: Vec::new(),
            data: Vec::with_capacity(PAGES_PER_FRAME * PAGE_SIZE),
            batched: 0,
            pages: 0,
            frames,
            writer,
        })
    }

    fn page(&mut self, pid: u32, addr: u64, data: &[u8]) -> Result<(), Error> {
        self.pids.extend_from_slice(&pid.to_le_bytes());
        self.addrs.extend_from_slice(&addr.to_le_bytes());
        self.data.extend_from_slice(data);
        self.batched += 1;
        if self.batched >= PAGES_PER_FRAME {
            self.flush_frame()?;
        }
        Ok(())
    }

    fn flush_frame(&mut self) -> Result<(), Error> {
        if self.batched == 0 {
            return Ok(());
        }
        let mut raw = Vec::with_capacity(self.batched * PAGE_RECORD);
        raw.extend_from_slice(&self.pids);
        raw.extend_from_slice(&self.addrs);
        raw.extend_from_slice(&self.data);
        let h = FrameHeader {
            compressed_len: 0,
            uncompressed_len: 0,
            events: self.batched as u32,
            epoch_min: self.epoch,
            epoch_max: self.epoch,
            first_seq: self.pages,
            min_ns: 0,
            max_ns: 0,
            payload_crc: 0,
        };
        // A send fails only if the writer stopped on an error: `finish`
        // reports it.
        let _ = self.frames.send(ToWrite::Frame(h, raw));
        self.pages += self.batched as u64;
        self.batched = 0;
        self.pids.clear();
        self.addrs.clear();
        self.data.clear();
        Ok(())
    }

    /// Waits until every page given so far is compressed and written.
    fn settle(&mut self) -> Result<(), Error> {
        self.flush_frame()?;
        let (done, settled) = std::sync::mpsc::sync_channel(1);
        // Either fails only if the writer stopped on an error: `finish`
        // reports it.
        if self.frames.send(ToWrite::Settle(done)).is_ok() {
            let _ = settled.recv();
        }
        Ok(())
    }

    /// Writes the last frame and fsyncs; returns (pages, file length).
    fn finish(mut self) -> Result<(u64, u64), Error> {
        self.flush_frame()?;
        drop(self.frames);
        let (file, len) = self.writer.join().unwrap_or_else(|_| {
            Err(Error::io(
                "write",
                &self.path,
                std::io::Error::other("the page writer panicked"),
            ))
        })?;
        file.sync_all()
            .map_err(|e| Error::io("fsync", &self.path, e))?;
        Ok((self.pages, len))
    }
}

/// The compressing thread of a `PageFileWriter`: compresses and appends
/// each frame it is sent; stops at the first error.
fn write_frames(
    mut file: File,
    path: &Path,
    frames: std::sync::mpsc::Receiver<ToWrite>,
) -> Result<(File, u64), Error> {
    let mut len = FILE_HEADER_LEN;
    for msg in frames {
        let (h, raw) = match msg {
            ToWrite::Frame(h, raw) => (h, raw),
            ToWrite::Settle(done) => {
                let _ = done.send(());
                continue;
            }
        };
        let (_, buf) = build_frame(h, &raw, |r| zstd::bulk::compress(r, ZSTD_LEVEL))
            .map_err(|e| Error::io("compress pages for", path, e))?;
        file.write_all(&buf)
            .map_err(|e| Error::io("write", path, e))?;
        len += buf.len() as u64;
    }
    Ok((file, len))
}

/// Reads the intact frames of a page file, calling `f(pid, addr, page)` for
/// each page in file order. Returns the damage that stopped the read, if any
/// (a missing file is damage too).
fn read_pages(path: &Path, mut f: impl FnMut(u32, u64, Bytes)) -> Result<Option<Error>, Error> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Some(Error::corrupt(path, 0, "file is missing")))
        }
        Err(e) => return Err(Error::io("open", path, e)),
    };
    let len = file
        .metadata()
        .map_err(|e| Error::io("stat", path, e))?
        .len();
    let mut h = [0u8; FILE_HEADER_LEN as usize];
    if len < FILE_HEADER_LEN {
        return Ok(Some(Error::corrupt(path, 0, "file header truncated")));
    }
    use std::os::unix::fs::FileExt;
    file.read_exact_at(&mut h, 0)
        .map_err(|e| Error::io("read", path, e))?;
    if let Err(reason) = check_file_header(&h, PAGES_MAGIC) {
        return Ok(Some(Error::corrupt(path, 0, reason)));
    }
    let (frames, damage) = scan_frames(&file, path, len, 0, 0)?;
    for fr in &frames {
        let (h, raw) = match read_frame_payload(&file, path, fr) {
            Ok(x) => x,
            Err(e @ Error::Corrupt { .. }) => return Ok(Some(e)),
            Err(e) => return Err(e),
        };
        let n = h.events as usize;
        if n.checked_mul(PAGE_RECORD) != Some(raw.len()) {
            let reason = format!("{} payload bytes for {n} pages", raw.len());
            return Ok(Some(Error::corrupt(path, fr.offset, reason)));
        }
        let raw = Bytes::from(raw);
        let data_at = n * 12;
        for i in 0..n {
            let p = &raw[i * 4..i * 4 + 4];
            let pid = u32::from_le_bytes([p[0], p[1], p[2], p[3]]);
            let mut a = [0u8; 8];
            a.copy_from_slice(&raw[n * 4 + i * 8..n * 4 + i * 8 + 8]);
            let start = data_at + i * PAGE_SIZE;
            f(
                pid,
                u64::from_le_bytes(a),
                raw.slice(start..start + PAGE_SIZE),
            );
        }
    }
    Ok(damage)
}

const _: () = assert!(PAGES_PER_FRAME * PAGE_RECORD < MAX_UNCOMPRESSED as usize);
const _: () = assert!(FRAME_HEADER_LEN == 64);

// ---- writer ---------------------------------------------------------------

/// Writes checkpoints and backing files into a trace directory. Independent
/// of [`crate::TraceWriter`] (and `Send + Sync`, cheap to clone), so a
/// supervisor thread can write checkpoints while events are written
/// elsewhere.
#[derive(Debug, Clone)]
pub struct CheckpointWriter {
    dir: PathBuf,
    /// (dev, inode, size, mtime s, mtime ns) -> content hash of files already
    /// copied, so unchanged libraries are not re-read at every checkpoint.
    known: Arc<Mutex<HashMap<FileKey, String>>>,
}

/// (dev, inode, size, mtime seconds, mtime nanoseconds) of a source file.
type FileKey = (u64, u64, u64, i64, i64);

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl CheckpointWriter {
    /// `trace_dir` must exist (created by [`crate::TraceWriter::create`]).
    pub fn new(trace_dir: &Path) -> Result<CheckpointWriter, Error> {
        let cdir = trace_dir.join(CHECKPOINTS_DIR);
        fs::create_dir_all(&cdir).map_err(|e| Error::io("create", &cdir, e))?;
        Ok(CheckpointWriter {
            dir: trace_dir.to_path_buf(),
            known: Arc::default(),
        })
    }

    /// Starts checkpoint `epoch` in `checkpoints/NNNNNN/`. A leftover
    /// incomplete directory for the epoch is replaced; a complete one is an
    /// error.
    pub fn begin(&self, epoch: u32) -> Result<PageSink, Error> {
        let cdir = checkpoint_dir(&self.dir, epoch);
        if cdir.join(STATE_FILE).exists() {
            return Err(Error::CheckpointExists { epoch });
        }
        if cdir.exists() {
            fs::remove_dir_all(&cdir).map_err(|e| Error::io("remove", &cdir, e))?;
        }
        fs::create_dir_all(&cdir).map_err(|e| Error::io("create", &cdir, e))?;
        let pages = PageFileWriter::create(cdir.join(PAGES_FILE), epoch)?;
        Ok(PageSink {
            dir: cdir,
            epoch,
            pages,
            per_pid: BTreeMap::new(),
        })
    }

    /// Copies the file at `path` into `files/<hash>` unless a file with the
    /// same content is already there; returns the hash (BLAKE3, 64 hex
    /// digits).
    pub fn add_file(&self, path: &Path) -> Result<String, Error> {
        let fdir = self.dir.join(FILES_DIR);
        fs::create_dir_all(&fdir).map_err(|e| Error::io("create", &fdir, e))?;
        let md = fs::metadata(path).map_err(|e| Error::io("stat", path, e))?;
        let key = {
            use std::os::unix::fs::MetadataExt;
            (md.dev(), md.ino(), md.size(), md.mtime(), md.mtime_nsec())
        };
        let cached = self
            .known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .cloned();
        if let Some(hash) = cached {
            if fdir.join(&hash).is_file() {
                return Ok(hash);
            }
        }
        // Hash first: the common case is a file that is already stored.
        let mut src = File::open(path).map_err(|e| Error::io("open", path, e))?;
        let mut hasher = blake3::Hasher::new();
        hasher
            .update_reader(&mut src)
            .map_err(|e| Error::io("read", path, e))?;
        let mut hash = hasher.finalize().to_hex().to_string();
        if !fdir.join(&hash).is_file() {
            hash = self.copy_in(path, &fdir)?;
        }
        self.known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, hash.clone());
        Ok(hash)
    }

    /// Copies `path` to a temporary file in `fdir`, hashing what was copied,
    /// then renames it to its hash.
    fn copy_in(&self, path: &Path, fdir: &Path) -> Result<String, Error> {
        let mut src = File::open(path).map_err(|e| Error::io("open", path, e))?;
        let tmp = fdir.join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let result = (|| {
            let mut dst = File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
            let mut hasher = blake3::Hasher::new();
            let mut buf = vec![0u8; 1 << 16];
            loop {
                let n = match src.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(Error::io("read", path, e)),
                };
                hasher.update(&buf[..n]);
                dst.write_all(&buf[..n])
                    .map_err(|e| Error::io("write", &tmp, e))?;
            }
            dst.sync_all().map_err(|e| Error::io("fsync", &tmp, e))?;
            let hash = hasher.finalize().to_hex().to_string();
            let target = fdir.join(&hash);
            fs::rename(&tmp, &target).map_err(|e| Error::io("rename", &tmp, e))?;
            sync_dir(fdir)?;
            Ok(hash)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }
}

/// Collects the pages of one checkpoint (see [`CheckpointWriter::begin`]).
/// Dropping it without [`PageSink::finish`] leaves an incomplete checkpoint
/// directory, which readers ignore and report.
#[derive(Debug)]
pub struct PageSink {
    dir: PathBuf,
    epoch: u32,
    pages: PageFileWriter,
    per_pid: BTreeMap<u32, u64>,
}

impl PageSink {
    /// Adds the page at `addr` (page-aligned) of process `pid`;
    /// `data.len()` must be [`PAGE_SIZE`]. Pages are batched and compressed.
    pub fn page(&mut self, pid: u32, addr: u64, data: &[u8]) -> Result<(), Error> {
        if data.len() != PAGE_SIZE {
            return Err(Error::InvalidPage {
                pid,
                addr,
                reason: format!("{} bytes, pages are {PAGE_SIZE}", data.len()),
            });
        }
        if !addr.is_multiple_of(PAGE_SIZE as u64) || addr.checked_add(PAGE_SIZE as u64).is_none() {
            return Err(Error::InvalidPage {
                pid,
                addr,
                reason: "address is not page-aligned".into(),
            });
        }
        self.pages.page(pid, addr, data)?;
        *self.per_pid.entry(pid).or_default() += 1;
        Ok(())
    }

    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// Waits until every page added so far is compressed and written (they
    /// are, by a thread of their own): before a stop, so that this work
    /// does not take the CPU from it.
    pub fn settle(&mut self) -> Result<(), Error> {
        self.pages.settle()
    }

    /// Writes the remaining pages, fsyncs pages.tlf, then writes state.json
    /// atomically (the checkpoint is complete from then on) and fsyncs the
    /// directories. `cp.epoch` must be the epoch given to `begin`; each
    /// process's `pages_stored` is set to the pages actually stored for it.
    pub fn finish(self, cp: &Checkpoint) -> Result<CheckpointInfo, Error> {
        if cp.epoch != self.epoch {
            return Err(Error::InvalidPage {
                pid: 0,
                addr: 0,
                reason: format!(
                    "checkpoint state is for epoch {}, pages for epoch {}",
                    cp.epoch, self.epoch
                ),
            });
        }
        let (pages, pages_len) = self.pages.finish()?;
        let mut state = cp.clone();
        for p in &mut state.processes {
            p.pages_stored = self.per_pid.get(&p.pid).copied().unwrap_or(0);
        }
        let mut text = serde_json::to_vec(&state).map_err(|source| Error::Meta {
            path: self.dir.join(STATE_FILE),
            source,
        })?;
        text.push(b'\n');
        write_atomic(&self.dir, STATE_FILE, &text)?;
        if let Some(parent) = self.dir.parent() {
            sync_dir(parent)?;
        }
        Ok(CheckpointInfo {
            pages,
            bytes: pages_len + text.len() as u64,
            ..info_of(&state)
        })
    }
}

fn info_of(cp: &Checkpoint) -> CheckpointInfo {
    CheckpointInfo {
        epoch: cp.epoch,
        time_ns: cp.time_ns,
        pages: 0,
        bytes: 0,
        stop_ns: cp.stop_ns,
        threads: cp.processes.iter().map(|p| p.threads.len() as u32).sum(),
        processes: cp.processes.len() as u32,
    }
}

// ---- memory images ----------------------------------------------------------

/// Sorted `(start, end)` of the stored mappings of a process.
fn stored_ranges(p: &ProcessState) -> Vec<(u64, u64)> {
    let mut r: Vec<(u64, u64)> = p
        .maps
        .iter()
        .filter(|m| m.stored && m.start < m.end)
        .map(|m| (m.start, m.end))
        .collect();
    r.sort_unstable();
    r
}

fn in_ranges(ranges: &[(u64, u64)], addr: u64) -> bool {
    let i = ranges.partition_point(|r| r.0 <= addr);
    i > 0 && {
        let (_, end) = ranges[i - 1];
        addr.checked_add(PAGE_SIZE as u64).is_some_and(|a| a <= end)
    }
}

/// The image of `pid` at checkpoint `epoch` (pages inside its stored
/// mappings there). Walks back from `epoch` over complete checkpoints in
/// which the process exists, stopping after one that stores it in full or
/// has a `base.tlf`, then applies (oldest first) each one's `base.tlf` and
/// `pages.tlf` (the latter skipped for `epoch` itself unless `own`). Damage
/// is appended to `damage` (reading continues with the intact pages).
fn memory(
    dir: &Path,
    epoch: u32,
    pid: u32,
    own: bool,
    damage: &mut Vec<Error>,
) -> Result<BTreeMap<u64, Bytes>, Error> {
    let state = read_state(dir, epoch)?;
    let Some(proc_e) = state.processes.iter().find(|p| p.pid == pid) else {
        return Err(Error::NoProcess { epoch, pid });
    };
    let ranges = stored_ranges(proc_e);
    let mut chain = vec![epoch];
    let stops =
        |d: u32, p: &ProcessState| p.full || checkpoint_dir(dir, d).join(BASE_FILE).exists();
    if !stops(epoch, proc_e) {
        let older = list(dir)?;
        for &(d, complete) in older.iter().rev().filter(|(d, _)| *d < epoch) {
            if !complete {
                continue;
            }
            let st = match read_state(dir, d) {
                Ok(st) => st,
                Err(e) => {
                    damage.push(e);
                    break;
                }
            };
            let Some(p) = st.processes.iter().find(|p| p.pid == pid) else {
                break;
            };
            chain.push(d);
            if stops(d, p) {
                break;
            }
        }
    }
    let mut image = BTreeMap::new();
    for &d in chain.iter().rev() {
        let cdir = checkpoint_dir(dir, d);
        let base = cdir.join(BASE_FILE);
        let mut files = Vec::new();
        if base.exists() {
            files.push(base);
        }
        if d != epoch || own {
            files.push(cdir.join(PAGES_FILE));
        }
        for f in files {
            let dmg = read_pages(&f, |p, addr, data| {
                if p == pid && in_ranges(&ranges, addr) {
                    image.insert(addr, data);
                }
            })?;
            damage.extend(dmg);
        }
    }
    Ok(image)
}

/// Cut for `drop_epochs_before(epoch)`: the newest complete checkpoint at or
/// below `epoch`, or `epoch` if there is none.
pub(crate) fn choose_cut(dir: &Path, epoch: u32) -> Result<u32, Error> {
    Ok(list(dir)?
        .iter()
        .rev()
        .find(|&&(d, complete)| complete && d <= epoch)
        .map_or(epoch, |&(d, _)| d))
}

/// Makes checkpoint `cut` self-contained: pages it inherits from older
/// checkpoints (inside its stored mappings, not stored by itself) are
/// written to its `base.tlf` (atomically). Damaged inputs abort the rebase
/// (and so the deletion) with the damage.
pub(crate) fn rebase(dir: &Path, cut: u32) -> Result<(), Error> {
    let cps = list(dir)?;
    if !cps.contains(&(cut, true)) || !cps.iter().any(|&(d, c)| c && d < cut) {
        return Ok(());
    }
    let state = read_state(dir, cut)?;
    let cdir = checkpoint_dir(dir, cut);
    let mut own = HashSet::new();
    if let Some(e) = read_pages(&cdir.join(PAGES_FILE), |pid, addr, _| {
        own.insert((pid, addr));
    })? {
        return Err(e);
    }
    let tmp = cdir.join(format!("{BASE_FILE}.tmp"));
    let mut w = PageFileWriter::create(tmp.clone(), cut)?;
    for p in state.processes.iter().filter(|p| !p.full) {
        let mut damage = Vec::new();
        let image = memory(dir, cut, p.pid, false, &mut damage)?;
        if let Some(e) = damage.into_iter().next() {
            return Err(e);
        }
        for (addr, data) in image {
            if !own.contains(&(p.pid, addr)) {
                w.page(p.pid, addr, &data)?;
            }
        }
    }
    w.finish()?;
    let base = cdir.join(BASE_FILE);
    fs::rename(&tmp, &base).map_err(|e| Error::io("rename", &tmp, e))?;
    sync_dir(&cdir)
}

/// Removes checkpoint directories of epochs below `cut`.
pub(crate) fn delete_before(dir: &Path, cut: u32) -> Result<(), Error> {
    let mut any = false;
    for (d, _) in list(dir)? {
        if d >= cut {
            break;
        }
        let p = checkpoint_dir(dir, d);
        fs::remove_dir_all(&p).map_err(|e| Error::io("remove", &p, e))?;
        any = true;
    }
    if any {
        sync_dir(&dir.join(CHECKPOINTS_DIR))?;
    }
    Ok(())
}

fn dir_bytes(p: &Path) -> u64 {
    fs::read_dir(p)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn count_pages(path: &Path) -> u64 {
    let Ok(file) = File::open(path) else {
        return 0;
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    scan_frames(&file, path, len, 0, 0)
        .map(|(frames, _)| frames.iter().map(|f| u64::from(f.events)).sum())
        .unwrap_or(0)
}

// ---- reader -----------------------------------------------------------------

impl Trace {
    /// Complete checkpoints (those with a readable `state.json`) of kept
    /// epochs (`>= meta.first_epoch`), by epoch.
    pub fn checkpoints(&self) -> Vec<CheckpointInfo> {
        let Ok(cps) = list(&self.dir) else {
            return Vec::new();
        };
        cps.into_iter()
            .filter(|&(d, complete)| complete && d >= self.meta.first_epoch)
            .filter_map(|(d, _)| {
                let st = read_state(&self.dir, d).ok()?;
                let cdir = checkpoint_dir(&self.dir, d);
                Some(CheckpointInfo {
                    pages: count_pages(&cdir.join(PAGES_FILE)),
                    bytes: dir_bytes(&cdir),
                    ..info_of(&st)
                })
            })
            .collect()
    }

    /// The state of checkpoint `epoch` ([`Error::NoCheckpoint`] if it has no
    /// `state.json`).
    pub fn checkpoint(&self, epoch: u32) -> Result<Checkpoint, Error> {
        read_state(&self.dir, epoch)
    }

    /// The full memory image of `pid` at checkpoint `epoch`: for each page
    /// address inside a mapping with `stored == true` at `epoch`, the newest
    /// page stored at or before `epoch`. Damage in any page file involved is
    /// an error (see [`Trace::checkpoint_memory_lossy`] for the intact part).
    pub fn checkpoint_memory(&self, epoch: u32, pid: u32) -> Result<BTreeMap<u64, Bytes>, Error> {
        let mut damage = Vec::new();
        let image = memory(&self.dir, epoch, pid, true, &mut damage)?;
        match damage.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(image),
        }
    }

    /// Like [`Trace::checkpoint_memory`], but damaged page files contribute
    /// their intact frames and the damage is returned alongside.
    pub fn checkpoint_memory_lossy(
        &self,
        epoch: u32,
        pid: u32,
    ) -> Result<(BTreeMap<u64, Bytes>, Vec<Error>), Error> {
        let mut damage = Vec::new();
        let image = memory(&self.dir, epoch, pid, true, &mut damage)?;
        Ok((image, damage))
    }

    /// `files/<hash>`, if present (`hash` as returned by
    /// [`CheckpointWriter::add_file`]).
    pub fn file_path(&self, hash: &str) -> Option<PathBuf> {
        if hash.is_empty() || hash.len() > 128 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let p = self.dir.join(FILES_DIR).join(hash);
        p.is_file().then_some(p)
    }

    /// Checks every checkpoint directory: incomplete ones (no `state.json`,
    /// e.g. the recorder died while writing it), unreadable `state.json`, and
    /// damage in `pages.tlf` / `base.tlf` (every frame is read and
    /// verified). Never panics; an empty list means no damage.
    pub fn checkpoint_damage(&self) -> Vec<Error> {
        let mut out = Vec::new();
        let cps = match list(&self.dir) {
            Ok(c) => c,
            Err(e) => return vec![e],
        };
        for (d, complete) in cps {
            let cdir = checkpoint_dir(&self.dir, d);
            if !complete {
                out.push(Error::corrupt(
                    &cdir,
                    0,
                    "incomplete checkpoint (no state.json): ignored",
                ));
                continue;
            }
            if let Err(e) = read_state(&self.dir, d) {
                out.push(e);
            }
            for name in [PAGES_FILE, BASE_FILE] {
                let p = cdir.join(name);
                if name == BASE_FILE && !p.exists() {
                    continue;
                }
                match read_pages(&p, |_, _, _| {}) {
                    Ok(Some(e)) | Err(e) => out.push(e),
                    Ok(None) => {}
                }
            }
        }
        out
    }
}
