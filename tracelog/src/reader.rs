//! [`Trace`]: opens a trace directory, builds (or loads) the frame index and
//! iterates events, reporting damage instead of panicking on it.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::blob::BlobStore;
use crate::codec::{
    check_file_header, DecodeError, FrameDecoder, FrameHeader, EVENTS_MAGIC, FILE_HEADER_LEN,
    FRAME_HEADER_LEN, INDEX_MAGIC,
};
use crate::meta::{read_meta, write_atomic, Meta, TraceState};
use crate::{Error, Event, FORMAT_VERSION};

pub(crate) const EVENTS_FILE: &str = "events.tlf";
pub(crate) const INDEX_FILE: &str = "index.tlf";
pub(crate) const LOCK_FILE: &str = "lock";

/// index.tlf: 16-byte file header, frame count u64, events.tlf length u64,
/// then one 48-byte entry per frame, then crc32 of everything before it.
const INDEX_PREFIX_LEN: usize = FILE_HEADER_LEN as usize + 16;
const INDEX_ENTRY_LEN: usize = 48;
/// An index larger than this is not trusted (the scan fallback still works).
const MAX_INDEX_BYTES: u64 = 1 << 30;

const DIED_REASON: &str = "recorder stopped without finalising (killed?)";

/// One frame of events.tlf, from the index or a header scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameInfo {
    /// Byte offset of the frame header in events.tlf.
    pub offset: u64,
    pub compressed_len: u32,
    pub events: u32,
    pub first_seq: u64,
    /// Smallest event time in the frame (times may step back slightly, so
    /// this is the minimum, not necessarily the first event's).
    pub first_ns: u64,
    /// Largest event time in the frame.
    pub last_ns: u64,
    pub epoch_min: u32,
    pub epoch_max: u32,
}

impl FrameInfo {
    fn end(&self) -> u64 {
        self.offset + FRAME_HEADER_LEN as u64 + u64::from(self.compressed_len)
    }
}

pub(crate) fn write_index(dir: &Path, frames: &[FrameInfo], events_len: u64) -> Result<(), Error> {
    let mut b = Vec::with_capacity(INDEX_PREFIX_LEN + frames.len() * INDEX_ENTRY_LEN + 4);
    b.extend_from_slice(&crate::codec::file_header(INDEX_MAGIC));
    b.extend_from_slice(&(frames.len() as u64).to_le_bytes());
    b.extend_from_slice(&events_len.to_le_bytes());
    for f in frames {
        b.extend_from_slice(&f.offset.to_le_bytes());
        b.extend_from_slice(&f.compressed_len.to_le_bytes());
        b.extend_from_slice(&f.events.to_le_bytes());
        b.extend_from_slice(&f.first_seq.to_le_bytes());
        b.extend_from_slice(&f.first_ns.to_le_bytes());
        b.extend_from_slice(&f.last_ns.to_le_bytes());
        b.extend_from_slice(&f.epoch_min.to_le_bytes());
        b.extend_from_slice(&f.epoch_max.to_le_bytes());
    }
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    write_atomic(dir, INDEX_FILE, &b)
}

/// Loads index.tlf if it is present and self-consistent; `None` means "scan
/// instead". Returns the frames and the events.tlf length it describes.
fn load_index(dir: &Path) -> Option<(Vec<FrameInfo>, u64)> {
    let path = dir.join(INDEX_FILE);
    let len = std::fs::metadata(&path).ok()?.len();
    if len > MAX_INDEX_BYTES || len < (INDEX_PREFIX_LEN + 4) as u64 {
        return None;
    }
    let b = std::fs::read(&path).ok()?;
    let (body, crc) = b.split_at(b.len() - 4);
    if crc32fast::hash(body).to_le_bytes() != crc {
        return None;
    }
    check_file_header(body, INDEX_MAGIC).ok()?;
    let u64_at = |at: usize| -> u64 {
        let mut a = [0u8; 8];
        a.copy_from_slice(&body[at..at + 8]);
        u64::from_le_bytes(a)
    };
    let u32_at =
        |at: usize| u32::from_le_bytes([body[at], body[at + 1], body[at + 2], body[at + 3]]);
    let count = u64_at(16);
    let events_len = u64_at(24);
    if (body.len() - INDEX_PREFIX_LEN) as u64 != count.checked_mul(INDEX_ENTRY_LEN as u64)? {
        return None;
    }
    let mut frames = Vec::with_capacity(count as usize);
    let (mut next_off, mut next_seq) = (FILE_HEADER_LEN, 0u64);
    for i in 0..count as usize {
        let e = INDEX_PREFIX_LEN + i * INDEX_ENTRY_LEN;
        let f = FrameInfo {
            offset: u64_at(e),
            compressed_len: u32_at(e + 8),
            events: u32_at(e + 12),
            first_seq: u64_at(e + 16),
            first_ns: u64_at(e + 24),
            last_ns: u64_at(e + 32),
            epoch_min: u32_at(e + 40),
            epoch_max: u32_at(e + 44),
        };
        // Frames are contiguous and sequence numbers gap-free; anything else
        // means this index does not describe this events.tlf.
        if f.offset != next_off || f.first_seq != next_seq || f.events == 0 {
            return None;
        }
        next_off = f.end();
        next_seq = next_seq.checked_add(u64::from(f.events))?;
        frames.push(f);
    }
    if next_off != events_len {
        return None;
    }
    Some((frames, events_len))
}

/// Reads frame headers from the start of events.tlf. Stops at the first
/// frame that cannot be read, returning the intact prefix and the damage.
fn scan_frames(
    file: &File,
    path: &Path,
    len: u64,
) -> Result<(Vec<FrameInfo>, Option<Error>), Error> {
    let mut frames = Vec::new();
    let mut off = FILE_HEADER_LEN;
    let mut next_seq = 0u64;
    let mut hbuf = [0u8; FRAME_HEADER_LEN];
    while off < len {
        if len - off < FRAME_HEADER_LEN as u64 {
            let reason = format!(
                "truncated frame header ({} of {FRAME_HEADER_LEN} bytes)",
                len - off
            );
            return Ok((frames, Some(Error::corrupt(path, off, reason))));
        }
        file.read_exact_at(&mut hbuf, off)
            .map_err(|e| Error::io("read", path, e))?;
        let h = match FrameHeader::parse(&hbuf) {
            Ok(h) => h,
            Err(reason) => return Ok((frames, Some(Error::corrupt(path, off, reason)))),
        };
        let avail = len - off - FRAME_HEADER_LEN as u64;
        if u64::from(h.compressed_len) > avail {
            let reason = format!(
                "truncated frame ({avail} of {} payload bytes present)",
                h.compressed_len
            );
            return Ok((frames, Some(Error::corrupt(path, off, reason))));
        }
        if h.first_seq != next_seq {
            let reason = format!("frame starts at seq {}, expected {next_seq}", h.first_seq);
            return Ok((frames, Some(Error::corrupt(path, off, reason))));
        }
        let f = FrameInfo {
            offset: off,
            compressed_len: h.compressed_len,
            events: h.events,
            first_seq: h.first_seq,
            first_ns: h.min_ns,
            last_ns: h.max_ns,
            epoch_min: h.epoch_min,
            epoch_max: h.epoch_max,
        };
        next_seq += u64::from(h.events);
        off = f.end();
        frames.push(f);
    }
    Ok((frames, None))
}

/// An open trace directory.
#[derive(Debug)]
pub struct Trace {
    dir: PathBuf,
    meta: Meta,
    events_path: PathBuf,
    events_file: Option<File>,
    frames: Vec<FrameInfo>,
    damage: Option<Error>,
    blobs: BlobStore,
}

impl Trace {
    /// Opens `dir`. Fails only if meta.json is missing, unreadable or of
    /// another format version (or on I/O errors); damage to the event files
    /// is reported through [`Trace::damage`] and the iterators instead.
    pub fn open(dir: &Path) -> Result<Trace, Error> {
        let meta = read_meta(dir)?;
        let events_path = dir.join(EVENTS_FILE);
        let blobs = BlobStore::open(dir)?;
        let mut t = Trace {
            dir: dir.to_path_buf(),
            meta,
            events_path,
            events_file: None,
            frames: Vec::new(),
            damage: None,
            blobs,
        };
        let file = match File::open(&t.events_path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                t.damage = Some(Error::corrupt(&t.events_path, 0, "file is missing"));
                return Ok(t);
            }
            Err(e) => return Err(Error::io("open", &t.events_path, e)),
        };
        let len = file
            .metadata()
            .map_err(|e| Error::io("stat", &t.events_path, e))?
            .len();
        let mut h = [0u8; FILE_HEADER_LEN as usize];
        let header_ok = if len < FILE_HEADER_LEN {
            Err("file header truncated".to_string())
        } else {
            file.read_exact_at(&mut h, 0)
                .map_err(|e| Error::io("read", &t.events_path, e))?;
            check_file_header(&h, EVENTS_MAGIC)
        };
        if let Err(reason) = header_ok {
            t.damage = Some(Error::corrupt(&t.events_path, 0, reason));
            return Ok(t);
        }
        match load_index(dir) {
            Some((frames, expect_len)) if expect_len == len => t.frames = frames,
            index => {
                let (frames, damage) = scan_frames(&file, &t.events_path, len)?;
                t.frames = frames;
                t.damage = damage;
                // A finished trace whose file got shorter lost whole frames;
                // the scan alone cannot notice a cut at a frame boundary.
                if let (None, Some((_, expect_len))) = (&t.damage, index) {
                    if len < expect_len {
                        let reason = format!("file truncated: index expects {expect_len} bytes");
                        t.damage = Some(Error::corrupt(&t.events_path, len, reason));
                    }
                }
            }
        }
        t.events_file = Some(file);
        Ok(t)
    }

    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The trace's state. A meta.json still saying Recording means either a
    /// live recorder (it holds the lock: Recording) or a dead one (Incomplete).
    pub fn state(&self) -> TraceState {
        match &self.meta.state {
            TraceState::Recording if !lock_held(&self.dir.join(LOCK_FILE)) => {
                TraceState::Incomplete {
                    reason: DIED_REASON.to_string(),
                }
            }
            s => s.clone(),
        }
    }

    /// All events in seq order.
    pub fn events(&self) -> Events<'_> {
        self.iter(Filter::default(), 0)
    }

    /// Events with `seq >= seq`.
    pub fn events_from_seq(&self, seq: u64) -> Events<'_> {
        let start = self
            .frames
            .partition_point(|f| f.first_seq + u64::from(f.events) <= seq);
        self.iter(
            Filter {
                from_seq: seq,
                ..Filter::default()
            },
            start,
        )
    }

    /// Events with `from_ns <= time_ns < to_ns`, in seq order.
    pub fn events_in_time(&self, from_ns: u64, to_ns: u64) -> Events<'_> {
        self.iter(
            Filter {
                time: Some((from_ns, to_ns)),
                ..Filter::default()
            },
            0,
        )
    }

    /// Events whose `epoch` is `epoch`, in seq order.
    pub fn events_in_epoch(&self, epoch: u32) -> Events<'_> {
        self.iter(
            Filter {
                epoch: Some(epoch),
                ..Filter::default()
            },
            0,
        )
    }

    pub fn frames(&self) -> &[FrameInfo] {
        &self.frames
    }

    /// Damage found while opening (torn tail, unreadable header, missing
    /// file). The iterators also yield it, as their last item.
    pub fn damage(&self) -> Option<&Error> {
        self.damage.as_ref()
    }

    fn iter(&self, filter: Filter, next_frame: usize) -> Events<'_> {
        Events {
            trace: self,
            filter,
            next_frame,
            cur: None,
            cur_offset: 0,
            done: false,
        }
    }

    fn load_frame(&self, f: &FrameInfo) -> Result<FrameDecoder, Error> {
        let path = &self.events_path;
        let bad = |reason: String| Error::corrupt(path, f.offset, reason);
        let Some(file) = &self.events_file else {
            return Err(bad("file is not open".into()));
        };
        let mut hb = [0u8; FRAME_HEADER_LEN];
        file.read_exact_at(&mut hb, f.offset)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::UnexpectedEof => bad("frame header past end of file".into()),
                _ => Error::io("read", path, e),
            })?;
        let h = FrameHeader::parse(&hb).map_err(bad)?;
        if h.compressed_len != f.compressed_len
            || h.events != f.events
            || h.first_seq != f.first_seq
        {
            return Err(bad("frame header does not match the index".into()));
        }
        // Length already checked against the file by the index/scan; a
        // shorter file now is reported as truncation, not a panic.
        let mut payload = vec![0u8; h.compressed_len as usize];
        file.read_exact_at(&mut payload, f.offset + FRAME_HEADER_LEN as u64)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::UnexpectedEof => bad("frame payload past end of file".into()),
                _ => Error::io("read", path, e),
            })?;
        if crc32fast::hash(&payload) != h.payload_crc {
            return Err(bad("frame payload checksum mismatch".into()));
        }
        let raw = zstd::bulk::decompress(&payload, h.uncompressed_len as usize)
            .map_err(|e| bad(format!("frame decompression failed: {e}")))?;
        if raw.len() != h.uncompressed_len as usize {
            return Err(bad(format!(
                "frame decompressed to {} bytes, header says {}",
                raw.len(),
                h.uncompressed_len
            )));
        }
        FrameDecoder::new(Bytes::from(raw), &h).map_err(bad)
    }
}

fn lock_held(path: &Path) -> bool {
    let Ok(f) = File::open(path) else {
        return false;
    };
    // Shared probe: conflicts with the writer's exclusive lock only. The lock
    // is released again when `f` is dropped.
    matches!(f.try_lock_shared(), Err(std::fs::TryLockError::WouldBlock))
}

#[derive(Debug, Clone, Copy, Default)]
struct Filter {
    from_seq: u64,
    time: Option<(u64, u64)>,
    epoch: Option<u32>,
}

impl Filter {
    fn frame(&self, f: &FrameInfo) -> bool {
        self.time
            .is_none_or(|(from, to)| f.last_ns >= from && f.first_ns < to)
            && self
                .epoch
                .is_none_or(|e| f.epoch_min <= e && e <= f.epoch_max)
    }

    #[inline]
    fn event(&self, ev: &Event) -> bool {
        ev.seq >= self.from_seq
            && self
                .time
                .is_none_or(|(from, to)| from <= ev.time_ns && ev.time_ns < to)
            && self.epoch.is_none_or(|e| ev.epoch == e)
    }
}

/// Iterator over a trace's events (see [`Trace::events`]). After damage it
/// yields one `Err` and then ends.
#[derive(Debug)]
pub struct Events<'a> {
    trace: &'a Trace,
    filter: Filter,
    next_frame: usize,
    cur: Option<FrameDecoder>,
    cur_offset: u64,
    done: bool,
}

impl Iterator for Events<'_> {
    type Item = Result<Event, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.done {
                return None;
            }
            if let Some(dec) = &mut self.cur {
                match dec.next_event(&self.trace.blobs) {
                    Some(Ok(ev)) => {
                        if self.filter.event(&ev) {
                            return Some(Ok(ev));
                        }
                    }
                    Some(Err(e)) => {
                        self.done = true;
                        return Some(Err(match e {
                            DecodeError::Frame(reason) => {
                                Error::corrupt(&self.trace.events_path, self.cur_offset, reason)
                            }
                            DecodeError::Blob(e) => e,
                        }));
                    }
                    None => {
                        let end = dec.check_consumed();
                        self.cur = None;
                        if let Err(reason) = end {
                            self.done = true;
                            let e =
                                Error::corrupt(&self.trace.events_path, self.cur_offset, reason);
                            return Some(Err(e));
                        }
                    }
                }
                continue;
            }
            let frames = &self.trace.frames;
            while self.next_frame < frames.len() && !self.filter.frame(&frames[self.next_frame]) {
                self.next_frame += 1;
            }
            let Some(f) = frames.get(self.next_frame) else {
                self.done = true;
                return self.trace.damage.as_ref().map(|d| Err(d.duplicate()));
            };
            self.next_frame += 1;
            self.cur_offset = f.offset;
            match self.trace.load_frame(f) {
                Ok(dec) => self.cur = Some(dec),
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

impl std::iter::FusedIterator for Events<'_> {}

// Keep the version constant referenced here so a format bump forces a look
// at the index layout too.
const _: () = assert!(FORMAT_VERSION == 1);
