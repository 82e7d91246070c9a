//! [`Trace`]: opens a trace directory, builds (or loads) the frame index and
//! iterates events, reporting damage instead of panicking on it.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::blob::{BlobStore, BLOBS_FILE};
use crate::codec::{
    check_file_header, DecodeError, FrameDecoder, FrameHeader, EVENTS_MAGIC, FILE_HEADER_LEN,
    FRAME_HEADER_LEN, INDEX_MAGIC,
};
use crate::meta::{read_meta, write_atomic, Meta, TraceState};
use crate::{Error, Event, FORMAT_VERSION};

pub(crate) const EVENTS_FILE: &str = "events.tlf";
pub(crate) const INDEX_FILE: &str = "index.tlf";
pub(crate) const LOCK_FILE: &str = "lock";
/// Segmented mode: `events/NNNNNN.tlf` (+ `.index.tlf`, `.blobs.tlf`).
pub(crate) const EVENTS_DIR: &str = "events";

/// `events/NNNNNN.tlf`: the events segment that starts at epoch `n`.
pub(crate) fn segment_path(dir: &Path, n: u32) -> PathBuf {
    dir.join(EVENTS_DIR).join(format!("{n:06}.tlf"))
}

pub(crate) fn segment_index_path(dir: &Path, n: u32) -> PathBuf {
    dir.join(EVENTS_DIR).join(format!("{n:06}.index.tlf"))
}

pub(crate) fn segment_blobs_path(dir: &Path, n: u32) -> PathBuf {
    dir.join(EVENTS_DIR).join(format!("{n:06}.blobs.tlf"))
}

/// Parses a `NNNNNN<suffix>` file or directory name (at least 6 digits).
pub(crate) fn numbered_name(name: &std::ffi::OsStr, suffix: &str) -> Option<u32> {
    let digits = name.to_str()?.strip_suffix(suffix)?;
    if digits.len() < 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// index.tlf: 16-byte file header, frame count u64, events.tlf length u64,
/// then one 48-byte entry per frame, then crc32 of everything before it.
const INDEX_PREFIX_LEN: usize = FILE_HEADER_LEN as usize + 16;
const INDEX_ENTRY_LEN: usize = 48;
/// An index larger than this is not trusted (the scan fallback still works).
const MAX_INDEX_BYTES: u64 = 1 << 30;

const DIED_REASON: &str = "recorder stopped without finalising (killed?)";

/// One frame of events.tlf (or of an events segment), from the index or a
/// header scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameInfo {
    /// Events segment holding the frame: `N` for `events/N.tlf` (segmented
    /// traces, see [`crate::WriterOptions::segment_epochs`]), 0 for `events.tlf`.
    pub segment: u32,
    /// Byte offset of the frame header in its file.
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
    pub(crate) fn end(&self) -> u64 {
        self.offset + FRAME_HEADER_LEN as u64 + u64::from(self.compressed_len)
    }

    pub(crate) fn end_seq(&self) -> u64 {
        self.first_seq + u64::from(self.events)
    }
}

/// Writes an index (`path` is index.tlf or a segment's `.index.tlf`) for the
/// frames of one events file of length `events_len`.
pub(crate) fn write_index(path: &Path, frames: &[FrameInfo], events_len: u64) -> Result<(), Error> {
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
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return Err(Error::corrupt(path, 0, "not an index file path"));
    };
    write_atomic(dir, name, &b)
}

/// Loads an index if it is present and self-consistent for an events file
/// whose first frame starts at `first_seq`; `None` means "scan instead".
/// Returns the frames and the events file length it describes.
fn load_index(path: &Path, segment: u32, first_seq: u64) -> Option<(Vec<FrameInfo>, u64)> {
    let len = std::fs::metadata(path).ok()?.len();
    if len > MAX_INDEX_BYTES || len < (INDEX_PREFIX_LEN + 4) as u64 {
        return None;
    }
    let b = std::fs::read(path).ok()?;
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
    let (mut next_off, mut next_seq) = (FILE_HEADER_LEN, first_seq);
    for i in 0..count as usize {
        let e = INDEX_PREFIX_LEN + i * INDEX_ENTRY_LEN;
        let f = FrameInfo {
            segment,
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

/// Reads frame headers from the start of a frame file (events or pages).
/// Stops at the first frame that cannot be read, returning the intact prefix
/// and the damage. The first frame must start at `first_seq`.
pub(crate) fn scan_frames(
    file: &File,
    path: &Path,
    len: u64,
    segment: u32,
    first_seq: u64,
) -> Result<(Vec<FrameInfo>, Option<Error>), Error> {
    let mut frames = Vec::new();
    let mut off = FILE_HEADER_LEN;
    let mut next_seq = first_seq;
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
            segment,
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

/// Reads (and validates) the payload of frame `f` in `file`, returning the
/// parsed header and the decompressed payload.
pub(crate) fn read_frame_payload(
    file: &File,
    path: &Path,
    f: &FrameInfo,
) -> Result<(FrameHeader, Vec<u8>), Error> {
    let bad = |reason: String| Error::corrupt(path, f.offset, reason);
    let mut hb = [0u8; FRAME_HEADER_LEN];
    file.read_exact_at(&mut hb, f.offset)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => bad("frame header past end of file".into()),
            _ => Error::io("read", path, e),
        })?;
    let h = FrameHeader::parse(&hb).map_err(bad)?;
    if h.compressed_len != f.compressed_len || h.events != f.events || h.first_seq != f.first_seq {
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
    Ok((h, raw))
}

/// One events file (`events.tlf`, or a segment `events/N.tlf`) and its blobs.
#[derive(Debug)]
struct Segment {
    number: u32,
    path: PathBuf,
    file: Option<File>,
    blobs: BlobStore,
}

/// What opening one events file found.
struct LoadedSegment {
    file: Option<File>,
    frames: Vec<FrameInfo>,
    damage: Option<Error>,
}

/// Opens one events file: header check, then its index if valid for a first
/// seq of `first_seq`, else a scan of the frame headers.
fn load_segment(
    path: &Path,
    index_path: &Path,
    number: u32,
    first_seq: u64,
    empty_ok: bool,
) -> Result<LoadedSegment, Error> {
    let mut out = LoadedSegment {
        file: None,
        frames: Vec::new(),
        damage: None,
    };
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            out.damage = Some(Error::corrupt(path, 0, "file is missing"));
            return Ok(out);
        }
        Err(e) => return Err(Error::io("open", path, e)),
    };
    let len = file
        .metadata()
        .map_err(|e| Error::io("stat", path, e))?
        .len();
    if len == 0 && empty_ok {
        // A segment created just before the recorder died.
        return Ok(out);
    }
    let mut h = [0u8; FILE_HEADER_LEN as usize];
    let header_ok = if len < FILE_HEADER_LEN {
        Err("file header truncated".to_string())
    } else {
        file.read_exact_at(&mut h, 0)
            .map_err(|e| Error::io("read", path, e))?;
        check_file_header(&h, EVENTS_MAGIC)
    };
    if let Err(reason) = header_ok {
        out.damage = Some(Error::corrupt(path, 0, reason));
        return Ok(out);
    }
    match load_index(index_path, number, first_seq) {
        Some((frames, expect_len)) if expect_len == len => out.frames = frames,
        index => {
            let (frames, damage) = scan_frames(&file, path, len, number, first_seq)?;
            out.frames = frames;
            out.damage = damage;
            // A finished trace whose file got shorter lost whole frames;
            // the scan alone cannot notice a cut at a frame boundary.
            if let (None, Some((_, expect_len))) = (&out.damage, index) {
                if len < expect_len {
                    let reason = format!("file truncated: index expects {expect_len} bytes");
                    out.damage = Some(Error::corrupt(path, len, reason));
                }
            }
        }
    }
    out.file = Some(file);
    Ok(out)
}

/// An open trace directory.
#[derive(Debug)]
pub struct Trace {
    pub(crate) dir: PathBuf,
    pub(crate) meta: Meta,
    segments: Vec<Segment>,
    frames: Vec<FrameInfo>,
    damage: Option<Error>,
}

impl Trace {
    /// Opens `dir`. Fails only if meta.json is missing, unreadable or of
    /// another format version (or on I/O errors); damage to the event files
    /// is reported through [`Trace::damage`] and the iterators instead.
    pub fn open(dir: &Path) -> Result<Trace, Error> {
        let meta = read_meta(dir)?;
        let mut t = Trace {
            dir: dir.to_path_buf(),
            meta,
            segments: Vec::new(),
            frames: Vec::new(),
            damage: None,
        };
        if t.meta.event_segments {
            t.open_segments()?;
        } else {
            let path = dir.join(EVENTS_FILE);
            let seg = load_segment(&path, &dir.join(INDEX_FILE), 0, 0, false)?;
            t.frames = seg.frames;
            t.damage = seg.damage;
            t.segments.push(Segment {
                number: 0,
                path,
                file: seg.file,
                blobs: BlobStore::open(&dir.join(BLOBS_FILE))?,
            });
        }
        Ok(t)
    }

    /// Segmented mode: `events/N.tlf` in order of N, skipping segments a
    /// flight-recorder deletion left behind (numbers below the segment that
    /// holds `meta.first_epoch`). Seqs continue across segments and start at
    /// `meta.first_seq`.
    fn open_segments(&mut self) -> Result<(), Error> {
        let ev_dir = self.dir.join(EVENTS_DIR);
        let mut numbers = Vec::new();
        match std::fs::read_dir(&ev_dir) {
            Ok(entries) => {
                for entry in entries {
                    let entry = entry.map_err(|e| Error::io("list", &ev_dir, e))?;
                    if let Some(n) = numbered_name(&entry.file_name(), ".tlf") {
                        numbers.push(n);
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.damage = Some(Error::corrupt(&ev_dir, 0, "directory is missing"));
                return Ok(());
            }
            Err(e) => return Err(Error::io("list", &ev_dir, e)),
        }
        numbers.sort_unstable();
        let first_epoch = self.meta.first_epoch;
        let floor = numbers
            .partition_point(|&n| n <= first_epoch)
            .saturating_sub(1);
        let numbers = &numbers[floor.min(numbers.len())..];
        let mut next_seq = self.meta.first_seq;
        for (i, &n) in numbers.iter().enumerate() {
            let path = segment_path(&self.dir, n);
            let last = i + 1 == numbers.len();
            let seg = load_segment(&path, &segment_index_path(&self.dir, n), n, next_seq, last)?;
            if let Some(f) = seg.frames.last() {
                next_seq = f.end_seq();
            }
            self.frames.extend(seg.frames);
            self.segments.push(Segment {
                number: n,
                path,
                file: seg.file,
                blobs: BlobStore::open(&segment_blobs_path(&self.dir, n))?,
            });
            if seg.damage.is_some() {
                self.damage = seg.damage;
                break;
            }
        }
        Ok(())
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
            cur_seg: 0,
            done: false,
        }
    }

    fn segment(&self, number: u32) -> Option<usize> {
        self.segments
            .binary_search_by_key(&number, |s| s.number)
            .ok()
    }

    fn load_frame(&self, seg: usize, f: &FrameInfo) -> Result<FrameDecoder, Error> {
        let seg = &self.segments[seg];
        let Some(file) = &seg.file else {
            return Err(Error::corrupt(&seg.path, f.offset, "file is not open"));
        };
        let (h, raw) = read_frame_payload(file, &seg.path, f)?;
        FrameDecoder::new(Bytes::from(raw), &h)
            .map_err(|reason| Error::corrupt(&seg.path, f.offset, reason))
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
    /// Index into `trace.segments` of the current frame.
    cur_seg: usize,
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
                let seg = &self.trace.segments[self.cur_seg];
                match dec.next_event(&seg.blobs) {
                    Some(Ok(ev)) => {
                        if self.filter.event(&ev) {
                            return Some(Ok(ev));
                        }
                    }
                    Some(Err(e)) => {
                        self.done = true;
                        return Some(Err(match e {
                            DecodeError::Frame(reason) => {
                                Error::corrupt(&seg.path, self.cur_offset, reason)
                            }
                            DecodeError::Blob(e) => e,
                        }));
                    }
                    None => {
                        let end = dec.check_consumed();
                        self.cur = None;
                        if let Err(reason) = end {
                            self.done = true;
                            let e = Error::corrupt(&seg.path, self.cur_offset, reason);
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
            let Some(seg) = self.trace.segment(f.segment) else {
                self.done = true;
                let reason = format!("frame of unknown segment {}", f.segment);
                return Some(Err(Error::corrupt(&self.trace.dir, f.offset, reason)));
            };
            self.cur_seg = seg;
            match self.trace.load_frame(seg, f) {
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
const _: () = assert!(FORMAT_VERSION == 2);
