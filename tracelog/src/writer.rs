//! [`TraceWriter`]: batches events on the caller's thread and hands full
//! batches to a background thread that encodes, compresses and appends them.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::blob::{BlobWriter, BLOBS_FILE};
use crate::checkpoint;
use crate::codec::{
    build_frame, file_header, Encoder, EVENTS_MAGIC, FILE_HEADER_LEN, MAX_UNCOMPRESSED,
};
use crate::meta::{sync_dir, write_meta, EpochInfo, Meta, TraceState};
use crate::reader::{
    segment_blobs_path, segment_index_path, segment_path, write_index, FrameInfo, EVENTS_DIR,
    EVENTS_FILE, INDEX_FILE, LOCK_FILE,
};
use crate::{Error, Event, EventKind, FORMAT_VERSION, KIND_NAMES};

/// Frames handed to the background thread but not yet written. Bounds memory
/// (a few frames) and makes `push` block, rather than grow, if the disk is
/// slower than the recorder.
const FRAMES_IN_FLIGHT: usize = 2;
/// Upper bound on events per frame regardless of options, so that a frame's
/// metadata (at most ~120 bytes/event encoded) stays far below
/// MAX_UNCOMPRESSED.
const MAX_FRAME_EVENTS: usize = 1 << 18;
/// A batch is also cut when its inline payload bytes reach this, and a single
/// event may carry at most this much: together with MAX_FRAME_EVENTS this
/// keeps every frame under MAX_UNCOMPRESSED.
const MAX_BATCH_BYTES: usize = 64 << 20;
const _: () = assert!(MAX_FRAME_EVENTS * 128 + 2 * MAX_BATCH_BYTES < MAX_UNCOMPRESSED as usize);

#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// Overwrite (empty) an existing non-empty directory.
    pub force: bool,
    /// Events per frame (clamped to 1..=262144).
    pub frame_events: usize,
    /// `tick` writes a partial frame and fdatasyncs when this much time has
    /// passed since the last frame; bounds what a crash can lose.
    pub flush_interval: Duration,
    pub zstd_level: i32,
    /// Output payloads at least this long are stored once in blobs.tlf
    /// (usize::MAX disables deduplication).
    pub dedup_min_bytes: usize,
    /// Store events as one segment per epoch (`events/NNNNNN.tlf`, started
    /// at each `EpochMark`) instead of a single `events.tlf`, so that
    /// [`TraceWriter::drop_epochs_before`] can delete old epochs.
    pub segment_epochs: bool,
    /// Recorded in meta.json (`keep_epochs`); the deletion itself is done by
    /// calling [`TraceWriter::drop_epochs_before`].
    pub keep_epochs: Option<u32>,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            force: false,
            frame_events: 16384,
            flush_interval: Duration::from_secs(1),
            zstd_level: 3,
            dedup_min_bytes: 4096,
            segment_epochs: false,
            keep_epochs: None,
        }
    }
}

/// Snapshot of writer progress.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    pub events: u64,
    /// Bytes appended to events.tlf and blobs.tlf (compressed).
    pub bytes_written: u64,
    pub frames: u64,
}

#[derive(Debug, Default)]
struct StatsInner {
    events: AtomicU64,
    bytes_written: AtomicU64,
    frames: AtomicU64,
}

/// Cloneable, thread-safe view of a writer's [`WriterStats`].
#[derive(Debug, Clone, Default)]
pub struct StatsHandle(Arc<StatsInner>);

impl StatsHandle {
    pub fn get(&self) -> WriterStats {
        WriterStats {
            events: self.0.events.load(Ordering::Relaxed),
            bytes_written: self.0.bytes_written.load(Ordering::Relaxed),
            frames: self.0.frames.load(Ordering::Relaxed),
        }
    }
}

enum Msg {
    Frame {
        events: Vec<Event>,
        sync: bool,
    },
    /// Make everything written so far durable, then answer.
    Sync(SyncSender<()>),
    /// Close the current segment (sync, write its index) and start
    /// `events/N.tlf`.
    NewSegment(u32),
    /// Delete these closed segments, then answer.
    Delete(Vec<u32>, SyncSender<Result<(), Error>>),
}

struct BgDone {
    /// The last (open) segment: its index is written by `finish`.
    last: Option<(PathBuf, Vec<FrameInfo>, u64)>,
}

/// Writer-side bookkeeping of one events segment.
#[derive(Debug, Clone)]
struct SegInfo {
    number: u32,
    first_seq: u64,
    counts: [u64; KIND_NAMES.len()],
}

/// Writes one trace directory. See the crate docs and docs/FORMAT.md.
#[derive(Debug)]
pub struct TraceWriter {
    dir: PathBuf,
    frame_events: usize,
    flush_interval: Duration,
    batch: Vec<Event>,
    batch_bytes: usize,
    next_seq: u64,
    tx: Option<SyncSender<Msg>>,
    handle: Option<JoinHandle<Result<BgDone, Error>>>,
    stats: StatsHandle,
    counts: [u64; KIND_NAMES.len()],
    epochs: Vec<EpochInfo>,
    /// Segmented mode: live segments, oldest first (one pseudo-segment in
    /// single-file mode, for the event counts).
    segmented: bool,
    segments: Vec<SegInfo>,
    first_epoch: u32,
    first_seq: u64,
    keep_epochs: Option<u32>,
    /// The meta given to `create`, rewritten by `drop_epochs_before`.
    meta: Meta,
    last_flush: Instant,
    /// Frames were sent since the last durable sync.
    unsynced: bool,
    /// Held (flock) until finish/drop; readers test it to tell a live
    /// recorder from a dead one.
    lock: Option<File>,
}

impl TraceWriter {
    pub fn create(dir: &Path, mut meta: Meta, opts: WriterOptions) -> Result<TraceWriter, Error> {
        let non_empty = match fs::read_dir(dir) {
            Ok(mut entries) => entries.next().is_some(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(Error::io("list", dir, e)),
        };
        if non_empty && !opts.force {
            return Err(Error::DirNotEmpty {
                path: dir.to_path_buf(),
            });
        }
        fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
        // Lock before clearing so we never wipe a directory a live recorder
        // is writing, even with force.
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::io("create", &lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::Locked {
                    path: dir.to_path_buf(),
                })
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io("lock", &lock_path, e)),
        }
        if non_empty {
            for entry in fs::read_dir(dir).map_err(|e| Error::io("list", dir, e))? {
                let entry = entry.map_err(|e| Error::io("list", dir, e))?;
                if entry.file_name() == LOCK_FILE {
                    continue;
                }
                let p = entry.path();
                let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
                let r = if is_dir {
                    fs::remove_dir_all(&p)
                } else {
                    fs::remove_file(&p)
                };
                r.map_err(|e| Error::io("remove", &p, e))?;
            }
        }

        let seg = if opts.segment_epochs {
            let ev_dir = dir.join(EVENTS_DIR);
            fs::create_dir(&ev_dir).map_err(|e| Error::io("create", &ev_dir, e))?;
            None
        } else {
            Some(OpenSegment::create(
                dir.join(EVENTS_FILE),
                dir.join(INDEX_FILE),
                BlobWriter::new(dir.join(BLOBS_FILE), opts.dedup_min_bytes, opts.zstd_level),
            )?)
        };

        meta.format_version = FORMAT_VERSION;
        meta.state = TraceState::Recording;
        meta.event_segments = opts.segment_epochs;
        meta.first_epoch = 0;
        meta.first_seq = 0;
        if opts.keep_epochs.is_some() {
            meta.keep_epochs = opts.keep_epochs;
        }
        write_meta(dir, &meta)?;

        let stats = StatsHandle::default();
        let (tx, rx) = sync_channel(FRAMES_IN_FLIGHT);
        let bg = Background {
            dir: dir.to_path_buf(),
            seg,
            closed_bytes: 0,
            dedup_min_bytes: opts.dedup_min_bytes,
            stats: stats.clone(),
            level: opts.zstd_level,
        };
        let handle = std::thread::Builder::new()
            .name("tracelog-writer".into())
            .spawn(move || bg.run(rx))
            .map_err(|e| Error::io("spawn writer thread for", dir, e))?;
        let frame_events = opts.frame_events.clamp(1, MAX_FRAME_EVENTS);
        Ok(TraceWriter {
            dir: dir.to_path_buf(),
            frame_events,
            flush_interval: opts.flush_interval,
            batch: Vec::with_capacity(frame_events),
            batch_bytes: 0,
            next_seq: 0,
            tx: Some(tx),
            handle: Some(handle),
            stats,
            counts: [0; KIND_NAMES.len()],
            epochs: Vec::new(),
            segmented: opts.segment_epochs,
            segments: if opts.segment_epochs {
                Vec::new()
            } else {
                vec![SegInfo {
                    number: 0,
                    first_seq: 0,
                    counts: [0; KIND_NAMES.len()],
                }]
            },
            first_epoch: 0,
            first_seq: 0,
            keep_epochs: meta.keep_epochs,
            meta,
            last_flush: Instant::now(),
            unsynced: false,
            lock: Some(lock),
        })
    }

    /// Appends an event (its `seq` is assigned here). Returns an error if the
    /// background thread failed, e.g. on a full disk.
    ///
    /// Frames never span epochs: the open frame is written first when `ev`
    /// is an `EpochMark` or its `epoch` differs from the frame's. In
    /// segmented mode an `EpochMark { epoch }` with `epoch` above the current
    /// segment's number starts segment `events/epoch.tlf`.
    pub fn push(&mut self, mut ev: Event) -> Result<(), Error> {
        if self.tx.is_none() {
            return Err(Error::WriterFailed);
        }
        ev.seq = self.next_seq;
        let bytes = payload_bytes(&ev.kind);
        if bytes > MAX_BATCH_BYTES {
            return Err(Error::InvalidEvent {
                seq: ev.seq,
                reason: format!("{bytes} payload bytes, at most {MAX_BATCH_BYTES} per event"),
            });
        }
        let mark = match ev.kind {
            EventKind::EpochMark { epoch } => Some(epoch),
            _ => None,
        };
        if !self.batch.is_empty() && (mark.is_some() || self.batch[0].epoch != ev.epoch) {
            self.send_batch(false)?;
        }
        if self.segmented {
            let start = match (self.segments.last(), mark) {
                (None, m) => Some(m.unwrap_or(ev.epoch)),
                (Some(s), Some(m)) if m > s.number => Some(m),
                _ => None,
            };
            if let Some(number) = start {
                self.send(Msg::NewSegment(number))?;
                self.segments.push(SegInfo {
                    number,
                    first_seq: ev.seq,
                    counts: [0; KIND_NAMES.len()],
                });
            }
        }
        self.next_seq += 1;
        let code = ev.kind.code() as usize;
        self.counts[code] += 1;
        if let Some(s) = self.segments.last_mut() {
            s.counts[code] += 1;
        }
        if self.epochs.is_empty() || mark.is_some() {
            self.epochs.push(EpochInfo {
                index: mark.unwrap_or(ev.epoch),
                start_seq: ev.seq,
                start_ns: ev.time_ns,
                end_ns: ev.time_ns,
                events: 0,
                checkpoint: false,
            });
        }
        if let Some(e) = self.epochs.last_mut() {
            e.events += 1;
            e.end_ns = e.end_ns.max(ev.time_ns);
        }
        self.stats.0.events.fetch_add(1, Ordering::Relaxed);
        self.batch.push(ev);
        self.batch_bytes += bytes;
        if self.batch.len() >= self.frame_events || self.batch_bytes >= MAX_BATCH_BYTES {
            self.send_batch(false)?;
        }
        Ok(())
    }

    /// Flight recorder: deletes everything before epoch `epoch` (segmented
    /// mode only). The cut is moved back to the newest complete checkpoint
    /// at or below `epoch` if checkpoint `epoch` is not complete (so the kept
    /// range always starts at a checkpoint, when there are checkpoints).
    ///
    /// Order, each step durable before the next: the oldest kept checkpoint
    /// is *rebased* (pages it inherits from deleted checkpoints are copied
    /// into its `base.tlf`), meta.json records the new `first_epoch` /
    /// `first_seq` / `epochs`, then event segments and checkpoint
    /// directories of older epochs are deleted. A crash in between leaves a
    /// readable trace (leftovers below `first_epoch` are ignored).
    ///
    /// Segments hold events from their `EpochMark` to the next one; the
    /// segment containing the cut is kept whole. `files/` is not pruned.
    pub fn drop_epochs_before(&mut self, epoch: u32) -> Result<(), Error> {
        if !self.segmented {
            return Err(Error::Unsupported {
                what: "drop_epochs_before needs WriterOptions::segment_epochs",
            });
        }
        self.check_background()?;
        let cut = checkpoint::choose_cut(&self.dir, epoch)?;
        if cut <= self.first_epoch {
            return Ok(());
        }
        checkpoint::rebase(&self.dir, cut)?;

        // Segments wholly below the cut: all before the one holding `cut`.
        let keep_from = self
            .segments
            .partition_point(|s| s.number <= cut)
            .saturating_sub(1);
        let deleted: Vec<SegInfo> = self.segments[..keep_from].to_vec();
        let first_seq = self
            .segments
            .get(keep_from)
            .map_or(self.next_seq, |s| s.first_seq);
        self.first_epoch = cut;
        self.first_seq = first_seq.max(self.first_seq);
        self.epochs.retain(|e| e.index >= cut);
        let mut meta = self.meta.clone();
        self.fill_meta(&mut meta);
        meta.state = TraceState::Recording;
        write_meta(&self.dir, &meta)?;

        let (reply_tx, reply_rx) = sync_channel(1);
        self.send(Msg::Delete(
            deleted.iter().map(|s| s.number).collect(),
            reply_tx,
        ))?;
        match reply_rx.recv() {
            Ok(r) => r?,
            Err(_) => return Err(self.collect_failure()),
        }
        for s in &deleted {
            for (c, n) in self.counts.iter_mut().zip(s.counts) {
                *c -= n;
            }
        }
        self.segments.drain(..keep_from);
        checkpoint::delete_before(&self.dir, cut)
    }

    /// Oldest kept epoch (0 until [`TraceWriter::drop_epochs_before`] cut).
    pub fn first_epoch(&self) -> u32 {
        self.first_epoch
    }

    /// Fills the writer-owned fields of `meta`.
    fn fill_meta(&self, meta: &mut Meta) {
        meta.format_version = FORMAT_VERSION;
        meta.event_counts = KIND_NAMES
            .iter()
            .zip(self.counts)
            .map(|(k, n)| (k.to_string(), n))
            .collect::<BTreeMap<_, _>>();
        if meta.epochs.is_empty() {
            meta.epochs = self.epochs.clone();
            for e in &mut meta.epochs {
                e.checkpoint = checkpoint::is_complete(&self.dir, e.index);
            }
        }
        meta.epochs.retain(|e| e.index >= self.first_epoch);
        meta.event_segments = self.segmented;
        meta.first_epoch = self.first_epoch;
        meta.first_seq = self.first_seq;
        if self.keep_epochs.is_some() {
            meta.keep_epochs = self.keep_epochs;
        }
    }

    /// Call periodically (every 100 ms or more often): writes a partial frame
    /// and makes it durable once `flush_interval` has passed since the last
    /// frame, so a killed recorder loses at most about that much.
    pub fn tick(&mut self) -> Result<(), Error> {
        self.check_background()?;
        if self.last_flush.elapsed() >= self.flush_interval {
            if !self.batch.is_empty() {
                self.send_batch(true)?;
            } else if self.unsynced {
                self.send(Msg::Frame {
                    events: Vec::new(),
                    sync: true,
                })?;
                self.unsynced = false;
            }
            self.last_flush = Instant::now();
        }
        Ok(())
    }

    /// Writes everything pushed so far and waits until it is on disk
    /// (addition to the brief's API; tests and checkpoints need a barrier).
    pub fn sync(&mut self) -> Result<(), Error> {
        if !self.batch.is_empty() {
            self.send_batch(false)?;
        }
        let (reply_tx, reply_rx) = sync_channel(1);
        self.send(Msg::Sync(reply_tx))?;
        if reply_rx.recv().is_err() {
            return Err(self.collect_failure());
        }
        self.unsynced = false;
        self.last_flush = Instant::now();
        Ok(())
    }

    pub fn stats(&self) -> WriterStats {
        self.stats.get()
    }

    pub fn stats_handle(&self) -> StatsHandle {
        self.stats.clone()
    }

    /// Flushes everything, writes index.tlf and the final meta.json (state
    /// Complete unless `meta.state` is Incomplete; event_counts,
    /// format_version, event_segments, first_epoch, first_seq and, if empty,
    /// epochs filled in) and releases the lock.
    pub fn finish(mut self, mut meta: Meta) -> Result<Meta, Error> {
        if !self.batch.is_empty() {
            self.send_batch(true)?;
        }
        drop(self.tx.take());
        let done = match self.handle.take().map(|h| h.join()) {
            Some(Ok(r)) => r?,
            Some(Err(_)) => return Err(Error::WriterPanicked),
            None => return Err(Error::WriterFailed),
        };
        if let Some((index_path, frames, len)) = &done.last {
            write_index(index_path, frames, *len)?;
        }
        self.fill_meta(&mut meta);
        if !matches!(meta.state, TraceState::Incomplete { .. }) {
            meta.state = TraceState::Complete;
        }
        write_meta(&self.dir, &meta)?;
        sync_dir(&self.dir)?;
        drop(self.lock.take());
        Ok(meta)
    }

    fn send_batch(&mut self, sync: bool) -> Result<(), Error> {
        let events = std::mem::replace(&mut self.batch, Vec::with_capacity(self.frame_events));
        self.batch_bytes = 0;
        self.send(Msg::Frame { events, sync })?;
        self.unsynced = !sync;
        self.last_flush = Instant::now();
        Ok(())
    }

    fn send(&mut self, msg: Msg) -> Result<(), Error> {
        let Some(tx) = &self.tx else {
            return Err(Error::WriterFailed);
        };
        if tx.send(msg).is_err() {
            return Err(self.collect_failure());
        }
        Ok(())
    }

    fn check_background(&mut self) -> Result<(), Error> {
        match &self.handle {
            Some(h) if h.is_finished() => Err(self.collect_failure()),
            Some(_) => Ok(()),
            None => Err(Error::WriterFailed),
        }
    }

    /// The background thread is gone: return its error (once).
    fn collect_failure(&mut self) -> Error {
        self.tx = None;
        match self.handle.take().map(|h| h.join()) {
            Some(Ok(Err(e))) => e,
            Some(Err(_)) => Error::WriterPanicked,
            _ => Error::WriterFailed,
        }
    }
}

impl Drop for TraceWriter {
    /// Without `finish`: write and sync what we have but leave meta.json in
    /// state Recording, so readers report the recording as cut short.
    fn drop(&mut self) {
        if self.tx.is_some() {
            if !self.batch.is_empty() {
                let _ = self.send_batch(true);
            }
            drop(self.tx.take());
            if let Some(h) = self.handle.take() {
                let _ = h.join();
            }
        }
    }
}

/// Bytes an event adds to a frame beyond its fixed-size fields.
fn payload_bytes(kind: &EventKind) -> usize {
    match kind {
        EventKind::Syscall(s) => s.outputs.iter().map(|o| o.data.len() + 32).sum(),
        EventKind::Exec { path, argv } => {
            path.len() + argv.iter().map(|a| a.len() + 10).sum::<usize>()
        }
        _ => 0,
    }
}

/// The events file being appended to, with its blobs and frame list.
struct OpenSegment {
    file: File,
    path: PathBuf,
    index_path: PathBuf,
    offset: u64,
    blobs: BlobWriter,
    frames: Vec<FrameInfo>,
    number: u32,
}

impl OpenSegment {
    fn create(path: PathBuf, index_path: PathBuf, blobs: BlobWriter) -> Result<Self, Error> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| Error::io("create", &path, e))?;
        file.write_all(&file_header(EVENTS_MAGIC))
            .map_err(|e| Error::io("write", &path, e))?;
        Ok(OpenSegment {
            file,
            path,
            index_path,
            offset: FILE_HEADER_LEN,
            blobs,
            frames: Vec::new(),
            number: 0,
        })
    }

    /// Blobs first: a durable frame must not reference a lost blob.
    fn sync(&mut self) -> Result<(), Error> {
        self.blobs.sync()?;
        self.file
            .sync_data()
            .map_err(|e| Error::io("fdatasync", &self.path, e))
    }

    fn bytes(&self) -> u64 {
        self.offset - FILE_HEADER_LEN + self.blobs.bytes_written
    }
}

struct Background {
    dir: PathBuf,
    /// None in segmented mode until the first segment starts.
    seg: Option<OpenSegment>,
    /// Bytes written to closed segments.
    closed_bytes: u64,
    dedup_min_bytes: usize,
    stats: StatsHandle,
    level: i32,
}

impl Background {
    fn run(mut self, rx: Receiver<Msg>) -> Result<BgDone, Error> {
        let mut enc = Encoder::new();
        let mut raw = Vec::new();
        let mut next_seq = 0u64;
        let mut compressor = zstd::bulk::Compressor::new(self.level)
            .map_err(|e| Error::io("set up compression for", &self.dir, e))?;
        for msg in rx {
            match msg {
                Msg::Frame { events, sync } => {
                    if !events.is_empty() {
                        let Some(seg) = &mut self.seg else {
                            return Err(Error::WriterFailed);
                        };
                        let blobs = &mut seg.blobs;
                        let mut sink = |d: &[u8]| blobs.put(d);
                        let h = enc.encode(&events, next_seq, &mut sink, &mut raw)?;
                        let (h, buf) = build_frame(h, &raw, |r| compressor.compress(r))
                            .map_err(|e| Error::io("compress a frame for", &seg.path, e))?;
                        // One write per frame: a crash leaves a prefix of the
                        // frame at worst, which the reader detects by length.
                        seg.file
                            .write_all(&buf)
                            .map_err(|e| Error::io("write", &seg.path, e))?;
                        seg.frames.push(FrameInfo {
                            segment: seg.number,
                            offset: seg.offset,
                            compressed_len: h.compressed_len,
                            events: h.events,
                            first_seq: h.first_seq,
                            first_ns: h.min_ns,
                            last_ns: h.max_ns,
                            epoch_min: h.epoch_min,
                            epoch_max: h.epoch_max,
                        });
                        seg.offset += buf.len() as u64;
                        next_seq += events.len() as u64;
                        let s = &self.stats.0;
                        s.bytes_written
                            .store(self.closed_bytes + seg.bytes(), Ordering::Relaxed);
                        s.frames.fetch_add(1, Ordering::Relaxed);
                    }
                    if sync {
                        self.sync()?;
                    }
                }
                Msg::Sync(reply) => {
                    self.sync()?;
                    let _ = reply.send(());
                }
                Msg::NewSegment(number) => {
                    if let Some(mut old) = self.seg.take() {
                        old.sync()?;
                        write_index(&old.index_path, &old.frames, old.offset)?;
                        self.closed_bytes += old.bytes();
                    }
                    let mut seg = OpenSegment::create(
                        segment_path(&self.dir, number),
                        segment_index_path(&self.dir, number),
                        BlobWriter::new(
                            segment_blobs_path(&self.dir, number),
                            self.dedup_min_bytes,
                            self.level,
                        ),
                    )?;
                    seg.number = number;
                    sync_dir(&self.dir.join(EVENTS_DIR))?;
                    self.seg = Some(seg);
                }
                Msg::Delete(numbers, reply) => {
                    let _ = reply.send(self.delete(&numbers));
                }
            }
        }
        self.sync()?;
        Ok(BgDone {
            last: self.seg.take().map(|s| (s.index_path, s.frames, s.offset)),
        })
    }

    fn delete(&mut self, numbers: &[u32]) -> Result<(), Error> {
        for &n in numbers {
            if self.seg.as_ref().is_some_and(|s| s.number == n) {
                continue;
            }
            for p in [
                segment_path(&self.dir, n),
                segment_index_path(&self.dir, n),
                segment_blobs_path(&self.dir, n),
            ] {
                match fs::remove_file(&p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io("remove", &p, e)),
                }
            }
        }
        sync_dir(&self.dir.join(EVENTS_DIR))
    }

    fn sync(&mut self) -> Result<(), Error> {
        match &mut self.seg {
            Some(s) => s.sync(),
            None => Ok(()),
        }
    }
}
