//! Frame header and the columnar event encoding inside a frame payload.
//! docs/FORMAT.md is the normative description; keep the two in sync.

use bytes::Bytes;

use crate::{Args, Event, EventKind, Output, SignalPhase, Syscall, FORMAT_VERSION, MAX_ARGS};

/// Every `.tlf` file starts with 16 bytes: 4-byte magic, format version
/// (u32 LE), 8 reserved zero bytes.
pub(crate) const FILE_HEADER_LEN: u64 = 16;
pub(crate) const EVENTS_MAGIC: [u8; 4] = *b"TLEV";
pub(crate) const INDEX_MAGIC: [u8; 4] = *b"TLIX";
pub(crate) const BLOBS_MAGIC: [u8; 4] = *b"TLBL";
pub(crate) const PAGES_MAGIC: [u8; 4] = *b"TLPG";

pub(crate) fn file_header(magic: [u8; 4]) -> [u8; FILE_HEADER_LEN as usize] {
    let mut h = [0u8; FILE_HEADER_LEN as usize];
    h[..4].copy_from_slice(&magic);
    h[4..8].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h
}

pub(crate) fn check_file_header(h: &[u8], magic: [u8; 4]) -> Result<(), String> {
    if h.len() < FILE_HEADER_LEN as usize {
        return Err("file header truncated".into());
    }
    if h[..4] != magic {
        return Err(format!("bad file magic {:?}", &h[..4]));
    }
    let v = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    if v != FORMAT_VERSION {
        return Err(format!(
            "file format version {v}, expected {FORMAT_VERSION}"
        ));
    }
    Ok(())
}

pub(crate) const FRAME_MAGIC: [u8; 4] = *b"TLFR";
pub(crate) const FRAME_HEADER_VERSION: u16 = 1;
pub(crate) const FRAME_HEADER_LEN: usize = 64;
/// Cap on a frame's decompressed payload: the reader allocates this much at
/// most per frame. The writer stays far below it (see writer limits).
pub(crate) const MAX_UNCOMPRESSED: u32 = 256 << 20;
/// Cap on a frame's compressed payload (zstd's worst case expansion of
/// MAX_UNCOMPRESSED is well under 1 MiB extra).
pub(crate) const MAX_COMPRESSED: u32 = MAX_UNCOMPRESSED + (1 << 20);

/// Fixed 64-byte frame header (all integers little-endian):
/// ```text
///  0 magic "TLFR"        4 header version u16   6 flags u16 (0)
///  8 compressed_len u32 12 uncompressed_len u32 16 event_count u32
/// 20 epoch_min u32      24 epoch_max u32        28 reserved u32 (0)
/// 32 first_seq u64      40 min_ns u64           48 max_ns u64
/// 56 payload crc32 u32  60 header crc32 u32 (of bytes 0..60)
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameHeader {
    pub compressed_len: u32,
    pub uncompressed_len: u32,
    pub events: u32,
    pub epoch_min: u32,
    pub epoch_max: u32,
    pub first_seq: u64,
    pub min_ns: u64,
    pub max_ns: u64,
    pub payload_crc: u32,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

impl FrameHeader {
    pub fn to_bytes(self) -> [u8; FRAME_HEADER_LEN] {
        let mut b = [0u8; FRAME_HEADER_LEN];
        b[0..4].copy_from_slice(&FRAME_MAGIC);
        b[4..6].copy_from_slice(&FRAME_HEADER_VERSION.to_le_bytes());
        b[8..12].copy_from_slice(&self.compressed_len.to_le_bytes());
        b[12..16].copy_from_slice(&self.uncompressed_len.to_le_bytes());
        b[16..20].copy_from_slice(&self.events.to_le_bytes());
        b[20..24].copy_from_slice(&self.epoch_min.to_le_bytes());
        b[24..28].copy_from_slice(&self.epoch_max.to_le_bytes());
        b[32..40].copy_from_slice(&self.first_seq.to_le_bytes());
        b[40..48].copy_from_slice(&self.min_ns.to_le_bytes());
        b[48..56].copy_from_slice(&self.max_ns.to_le_bytes());
        b[56..60].copy_from_slice(&self.payload_crc.to_le_bytes());
        let crc = crc32fast::hash(&b[..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Parses and sanity-checks a header; the error is a reason string that
    /// the caller places at the frame's offset.
    pub fn parse(b: &[u8; FRAME_HEADER_LEN]) -> Result<FrameHeader, String> {
        if b[0..4] != FRAME_MAGIC {
            return Err("bad frame magic".into());
        }
        if crc32fast::hash(&b[..60]) != u32_at(b, 60) {
            return Err("frame header checksum mismatch".into());
        }
        let version = u16::from_le_bytes([b[4], b[5]]);
        if version != FRAME_HEADER_VERSION {
            return Err(format!("unknown frame header version {version}"));
        }
        let h = FrameHeader {
            compressed_len: u32_at(b, 8),
            uncompressed_len: u32_at(b, 12),
            events: u32_at(b, 16),
            epoch_min: u32_at(b, 20),
            epoch_max: u32_at(b, 24),
            first_seq: u64_at(b, 32),
            min_ns: u64_at(b, 40),
            max_ns: u64_at(b, 48),
            payload_crc: u32_at(b, 56),
        };
        if h.uncompressed_len > MAX_UNCOMPRESSED {
            return Err(format!(
                "uncompressed length {} over limit",
                h.uncompressed_len
            ));
        }
        if h.compressed_len > MAX_COMPRESSED {
            return Err(format!("compressed length {} over limit", h.compressed_len));
        }
        // Every event takes at least its tag byte.
        if h.events == 0 || h.events > h.uncompressed_len {
            return Err(format!("implausible event count {}", h.events));
        }
        if h.epoch_min > h.epoch_max || h.min_ns > h.max_ns {
            return Err("inverted epoch or time range".into());
        }
        if h.first_seq.checked_add(u64::from(h.events)).is_none() {
            return Err("sequence number overflow".into());
        }
        Ok(h)
    }
}

/// Compresses `raw` and returns the complete frame (header + payload), with
/// `h`'s lengths and crc filled in. Written with a single `write` by callers.
pub(crate) fn build_frame(
    mut h: FrameHeader,
    raw: &[u8],
    compress: impl FnOnce(&[u8]) -> std::io::Result<Vec<u8>>,
) -> std::io::Result<(FrameHeader, Vec<u8>)> {
    let compressed = compress(raw)?;
    h.uncompressed_len = raw.len() as u32;
    h.compressed_len = compressed.len() as u32;
    h.payload_crc = crc32fast::hash(&compressed);
    let mut buf = Vec::with_capacity(FRAME_HEADER_LEN + compressed.len());
    buf.extend_from_slice(&h.to_bytes());
    buf.extend_from_slice(&compressed);
    Ok((h, buf))
}

// ---- varints -------------------------------------------------------------

#[inline]
pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[inline]
fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

#[inline]
fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

// ---- streams -------------------------------------------------------------

/// Column streams of a frame payload, in payload order.
const S_TAG: usize = 0; // 1 byte per event
const S_TIME: usize = 1; // zigzag(time - previous time)
const S_ID: usize = 2; // cpu / pid,tid / epoch when not "same as previous"
const S_NR: usize = 3; // syscall nr
const S_DUR: usize = 4; // zigzag(exit - enter)
const S_RET: usize = 5; // zigzag(ret)
const S_ARGS: usize = 6; // arg count + args, unless "same args"
const S_MISC: usize = 7; // everything else (non-syscall fields, outputs)
const S_BYTES: usize = 8; // raw bytes: inline output data, exec strings
pub(crate) const NSTREAMS: usize = 9;

// Tag byte: low 3 bits kind code, then flags.
const KIND_MASK: u8 = 0x07;
const T_SAME_CPU: u8 = 0x08;
/// pid and tid both equal those of the previous event in the frame.
const T_SAME_TID: u8 = 0x10;
const T_SAME_EPOCH: u8 = 0x20;
/// Syscall with flags == 0 and no outputs: nothing in S_MISC.
const T_SYS_PLAIN: u8 = 0x40;
/// Syscall whose args equal the last syscall with the same nr in this frame
/// (any thread): nothing in S_ARGS.
const T_SYS_SAME_ARGS: u8 = 0x80;

/// "Same args" is tracked for syscall numbers below this (covers every
/// Linux syscall table today); a flat table keeps it allocation-free per event.
const ARGS_TABLE: usize = 512;

const OUT_COMPLETE: u64 = 1;
const OUT_BLOB: u64 = 2;

/// Where the encoder puts a large payload: `Some(blob id)` if stored in
/// blobs.tlf, `None` to inline it in the frame.
pub(crate) type BlobSink<'a> = dyn FnMut(&[u8]) -> Result<Option<u64>, crate::Error> + 'a;

/// Reusable encoder state (buffers survive between frames).
#[derive(Debug)]
pub(crate) struct Encoder {
    streams: [Vec<u8>; NSTREAMS],
    last_args: Vec<Args>,
}

impl Encoder {
    pub fn new() -> Encoder {
        Encoder {
            streams: Default::default(),
            last_args: vec![Args::default(); ARGS_TABLE],
        }
    }

    /// Encodes `events` (non-empty) into `out` (cleared first) and returns the
    /// header fields except lengths and crc.
    pub fn encode(
        &mut self,
        events: &[Event],
        first_seq: u64,
        blobs: &mut BlobSink<'_>,
        out: &mut Vec<u8>,
    ) -> Result<FrameHeader, crate::Error> {
        for s in &mut self.streams {
            s.clear();
        }
        self.last_args.fill(Args::default());
        let min_ns = events.iter().map(|e| e.time_ns).min().unwrap_or(0);
        let max_ns = events.iter().map(|e| e.time_ns).max().unwrap_or(0);
        let epoch_min = events.iter().map(|e| e.epoch).min().unwrap_or(0);
        let epoch_max = events.iter().map(|e| e.epoch).max().unwrap_or(0);

        let (mut p_time, mut p_cpu, mut p_pid, mut p_tid, mut p_epoch) =
            (min_ns, 0, 0, 0, epoch_min);
        let s = &mut self.streams;
        for ev in events {
            let mut tag = ev.kind.code();
            put_varint(
                &mut s[S_TIME],
                zigzag(ev.time_ns.wrapping_sub(p_time) as i64),
            );
            p_time = ev.time_ns;
            if ev.cpu == p_cpu {
                tag |= T_SAME_CPU;
            } else {
                put_varint(&mut s[S_ID], ev.cpu.into());
                p_cpu = ev.cpu;
            }
            if ev.pid == p_pid && ev.tid == p_tid {
                tag |= T_SAME_TID;
            } else {
                put_varint(&mut s[S_ID], ev.pid.into());
                put_varint(&mut s[S_ID], ev.tid.into());
                p_pid = ev.pid;
                p_tid = ev.tid;
            }
            if ev.epoch == p_epoch {
                tag |= T_SAME_EPOCH;
            } else {
                put_varint(&mut s[S_ID], ev.epoch.into());
                p_epoch = ev.epoch;
            }
            match &ev.kind {
                EventKind::Syscall(sc) => {
                    put_varint(&mut s[S_NR], sc.nr.into());
                    put_varint(
                        &mut s[S_DUR],
                        zigzag(ev.time_ns.wrapping_sub(sc.enter_ns) as i64),
                    );
                    put_varint(&mut s[S_RET], zigzag(sc.ret));
                    let slot = self.last_args.get_mut(sc.nr as usize);
                    match slot {
                        Some(last) if *last == sc.args => tag |= T_SYS_SAME_ARGS,
                        _ => {
                            let a = sc.args.as_slice();
                            s[S_ARGS].push(a.len() as u8);
                            for &v in a {
                                put_varint(&mut s[S_ARGS], v);
                            }
                            if let Some(last) = slot {
                                *last = sc.args;
                            }
                        }
                    }
                    if sc.flags == 0 && sc.outputs.is_empty() {
                        tag |= T_SYS_PLAIN;
                    } else {
                        put_varint(&mut s[S_MISC], sc.flags.into());
                        put_varint(&mut s[S_MISC], sc.outputs.len() as u64);
                        for o in &sc.outputs {
                            put_varint(&mut s[S_MISC], o.arg.into());
                            put_varint(&mut s[S_MISC], o.addr);
                            let blob = blobs(&o.data)?;
                            let flags = if o.complete { OUT_COMPLETE } else { 0 }
                                | if blob.is_some() { OUT_BLOB } else { 0 };
                            put_varint(&mut s[S_MISC], flags);
                            put_varint(&mut s[S_MISC], o.data.len() as u64);
                            match blob {
                                Some(id) => put_varint(&mut s[S_MISC], id),
                                None => s[S_BYTES].extend_from_slice(&o.data),
                            }
                        }
                    }
                }
                EventKind::Switch {
                    prev_tid,
                    next_tid,
                    prev_state,
                    ip,
                    sp,
                } => {
                    let m = &mut s[S_MISC];
                    put_varint(m, (*prev_tid).into());
                    put_varint(m, (*next_tid).into());
                    put_varint(m, *prev_state);
                    put_varint(m, *ip);
                    put_varint(m, *sp);
                }
                EventKind::Fork {
                    child_pid,
                    child_tid,
                    flags,
                } => {
                    let m = &mut s[S_MISC];
                    put_varint(m, (*child_pid).into());
                    put_varint(m, (*child_tid).into());
                    put_varint(m, *flags);
                }
                EventKind::Exec { path, argv } => {
                    put_varint(&mut s[S_MISC], path.len() as u64);
                    s[S_BYTES].extend_from_slice(path.as_bytes());
                    put_varint(&mut s[S_MISC], argv.len() as u64);
                    for a in argv {
                        put_varint(&mut s[S_MISC], a.len() as u64);
                        s[S_BYTES].extend_from_slice(a.as_bytes());
                    }
                }
                EventKind::Exit {
                    code,
                    signal,
                    group_dead,
                } => {
                    let m = &mut s[S_MISC];
                    put_varint(m, zigzag((*code).into()));
                    put_varint(m, (*signal).into());
                    m.push(u8::from(*group_dead));
                }
                EventKind::Signal {
                    sig,
                    phase,
                    code,
                    errno,
                    result,
                    target_tid,
                } => {
                    let m = &mut s[S_MISC];
                    put_varint(m, (*sig).into());
                    m.push(match phase {
                        SignalPhase::Generated => 0,
                        SignalPhase::Delivered => 1,
                    });
                    put_varint(m, zigzag((*code).into()));
                    put_varint(m, zigzag((*errno).into()));
                    put_varint(m, zigzag((*result).into()));
                    put_varint(m, (*target_tid).into());
                }
                EventKind::EpochMark { epoch } => put_varint(&mut s[S_MISC], (*epoch).into()),
                EventKind::Sync { op, ip, object } => {
                    let m = &mut s[S_MISC];
                    put_varint(m, (*op).into());
                    put_varint(m, *ip);
                    put_varint(m, *object);
                }
            }
            s[S_TAG].push(tag);
        }

        out.clear();
        put_varint(out, NSTREAMS as u64);
        for st in s.iter() {
            put_varint(out, st.len() as u64);
        }
        for st in s.iter() {
            out.extend_from_slice(st);
        }
        Ok(FrameHeader {
            compressed_len: 0,
            uncompressed_len: 0,
            events: events.len() as u32,
            epoch_min,
            epoch_max,
            first_seq,
            min_ns,
            max_ns,
            payload_crc: 0,
        })
    }
}

/// Resolves blob references while decoding.
pub(crate) trait BlobSource {
    /// The blob with id `id`, which must be `len` bytes long.
    fn blob(&self, id: u64, len: u64) -> Result<Bytes, crate::Error>;
}

#[derive(Debug)]
pub(crate) enum DecodeError {
    /// The frame payload is malformed.
    Frame(String),
    /// A referenced blob could not be read.
    Blob(crate::Error),
}

impl From<&str> for DecodeError {
    fn from(s: &str) -> Self {
        DecodeError::Frame(s.to_string())
    }
}

/// Iterates the events of one decompressed frame payload.
#[derive(Debug)]
pub(crate) struct FrameDecoder {
    data: Bytes,
    pos: [usize; NSTREAMS],
    end: [usize; NSTREAMS],
    remaining: u32,
    seq: u64,
    time: u64,
    cpu: u32,
    pid: u32,
    tid: u32,
    epoch: u32,
    last_args: Vec<Args>,
}

impl FrameDecoder {
    pub fn new(data: Bytes, h: &FrameHeader) -> Result<FrameDecoder, String> {
        let mut p = 0usize;
        let n = read_varint(&data, &mut p, data.len()).ok_or("bad stream table")?;
        // More streams than we know are tolerated (ignored) so a later
        // version can add columns; fewer would mean missing data.
        if n < NSTREAMS as u64 || n > 64 {
            return Err(format!("bad stream count {n}"));
        }
        let mut lens = [0u64; 64];
        for l in lens.iter_mut().take(n as usize) {
            *l = read_varint(&data, &mut p, data.len()).ok_or("bad stream table")?;
        }
        let mut pos = [0usize; NSTREAMS];
        let mut end = [0usize; NSTREAMS];
        let mut at = p as u64;
        for i in 0..n as usize {
            let next = at
                .checked_add(lens[i])
                .filter(|&e| e <= data.len() as u64)
                .ok_or("stream lengths exceed payload")?;
            if i < NSTREAMS {
                pos[i] = at as usize;
                end[i] = next as usize;
            }
            at = next;
        }
        if at != data.len() as u64 {
            return Err("stream lengths do not add up to the payload".into());
        }
        if (end[S_TAG] - pos[S_TAG]) as u64 != u64::from(h.events) {
            return Err("tag stream length differs from the event count".into());
        }
        Ok(FrameDecoder {
            data,
            pos,
            end,
            remaining: h.events,
            seq: h.first_seq,
            time: h.min_ns,
            cpu: 0,
            pid: 0,
            tid: 0,
            epoch: h.epoch_min,
            last_args: vec![Args::default(); ARGS_TABLE],
        })
    }

    /// After the last event: every stream must have been consumed exactly.
    pub fn check_consumed(&self) -> Result<(), String> {
        match (0..NSTREAMS).find(|&i| self.pos[i] != self.end[i]) {
            Some(i) => Err(format!("stream {i} has trailing bytes")),
            None => Ok(()),
        }
    }

    #[inline]
    fn var(&mut self, s: usize) -> Result<u64, DecodeError> {
        read_varint(&self.data, &mut self.pos[s], self.end[s])
            .ok_or_else(|| DecodeError::Frame(format!("stream {s} truncated or bad varint")))
    }

    #[inline]
    fn var32(&mut self, s: usize) -> Result<u32, DecodeError> {
        u32::try_from(self.var(s)?).map_err(|_| "value out of u32 range".into())
    }

    #[inline]
    fn zz32(&mut self, s: usize) -> Result<i32, DecodeError> {
        i32::try_from(unzigzag(self.var(s)?)).map_err(|_| "value out of i32 range".into())
    }

    #[inline]
    fn byte(&mut self, s: usize) -> Result<u8, DecodeError> {
        let p = self.pos[s];
        if p >= self.end[s] {
            return Err(DecodeError::Frame(format!("stream {s} truncated")));
        }
        self.pos[s] = p + 1;
        Ok(self.data[p])
    }

    fn take_bytes(&mut self, len: u64) -> Result<Bytes, DecodeError> {
        let p = self.pos[S_BYTES];
        if len > (self.end[S_BYTES] - p) as u64 {
            return Err("byte stream truncated".into());
        }
        let e = p + len as usize;
        self.pos[S_BYTES] = e;
        Ok(self.data.slice(p..e))
    }

    fn take_string(&mut self) -> Result<String, DecodeError> {
        let len = self.var(S_MISC)?;
        let b = self.take_bytes(len)?;
        String::from_utf8(b.to_vec()).map_err(|_| "string is not UTF-8".into())
    }

    /// Decodes the next event; `None` after the last one.
    pub fn next_event(&mut self, blobs: &dyn BlobSource) -> Option<Result<Event, DecodeError>> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        Some(self.decode_one(blobs))
    }

    fn decode_one(&mut self, blobs: &dyn BlobSource) -> Result<Event, DecodeError> {
        let tag = self.byte(S_TAG)?;
        let delta = unzigzag(self.var(S_TIME)?);
        self.time = self.time.wrapping_add(delta as u64);
        if tag & T_SAME_CPU == 0 {
            self.cpu = self.var32(S_ID)?;
        }
        if tag & T_SAME_TID == 0 {
            self.pid = self.var32(S_ID)?;
            self.tid = self.var32(S_ID)?;
        }
        if tag & T_SAME_EPOCH == 0 {
            self.epoch = self.var32(S_ID)?;
        }
        let kind_code = tag & KIND_MASK;
        if kind_code != 0 && tag & (T_SYS_PLAIN | T_SYS_SAME_ARGS) != 0 {
            return Err("syscall-only flags on a non-syscall event".into());
        }
        let kind = match kind_code {
            0 => {
                let nr = self.var32(S_NR)?;
                let dur = unzigzag(self.var(S_DUR)?);
                let enter_ns = self.time.wrapping_sub(dur as u64);
                let ret = unzigzag(self.var(S_RET)?);
                let args = if tag & T_SYS_SAME_ARGS != 0 {
                    *self
                        .last_args
                        .get(nr as usize)
                        .ok_or("same-args flag on an untracked syscall number")?
                } else {
                    let n = self.byte(S_ARGS)? as usize;
                    if n > MAX_ARGS {
                        return Err("more than 6 syscall arguments".into());
                    }
                    let mut v = [0u64; MAX_ARGS];
                    for x in v.iter_mut().take(n) {
                        *x = self.var(S_ARGS)?;
                    }
                    let a = Args::new(&v[..n]);
                    if let Some(last) = self.last_args.get_mut(nr as usize) {
                        *last = a;
                    }
                    a
                };
                let (flags, outputs) = if tag & T_SYS_PLAIN != 0 {
                    (0, Vec::new())
                } else {
                    let flags = self.var32(S_MISC)?;
                    let n = self.var(S_MISC)?;
                    // Each output takes >= 4 bytes of S_MISC: bound the
                    // allocation by what the stream can actually hold.
                    if n > ((self.end[S_MISC] - self.pos[S_MISC]) / 4) as u64 {
                        return Err("output count exceeds stream".into());
                    }
                    let mut outputs = Vec::with_capacity(n as usize);
                    for _ in 0..n {
                        let arg = u8::try_from(self.var(S_MISC)?)
                            .map_err(|_| DecodeError::from("output arg out of range"))?;
                        let addr = self.var(S_MISC)?;
                        let oflags = self.var(S_MISC)?;
                        if oflags & !(OUT_COMPLETE | OUT_BLOB) != 0 {
                            return Err("unknown output flags".into());
                        }
                        let len = self.var(S_MISC)?;
                        let data = if oflags & OUT_BLOB != 0 {
                            let id = self.var(S_MISC)?;
                            blobs.blob(id, len).map_err(DecodeError::Blob)?
                        } else {
                            self.take_bytes(len)?
                        };
                        outputs.push(Output {
                            arg,
                            addr,
                            data,
                            complete: oflags & OUT_COMPLETE != 0,
                        });
                    }
                    (flags, outputs)
                };
                EventKind::Syscall(Syscall {
                    nr,
                    args,
                    ret,
                    enter_ns,
                    flags,
                    outputs,
                })
            }
            1 => EventKind::Switch {
                prev_tid: self.var32(S_MISC)?,
                next_tid: self.var32(S_MISC)?,
                prev_state: self.var(S_MISC)?,
                ip: self.var(S_MISC)?,
                sp: self.var(S_MISC)?,
            },
            2 => EventKind::Fork {
                child_pid: self.var32(S_MISC)?,
                child_tid: self.var32(S_MISC)?,
                flags: self.var(S_MISC)?,
            },
            3 => {
                let path = self.take_string()?;
                let n = self.var(S_MISC)?;
                if n > (self.end[S_MISC] - self.pos[S_MISC]) as u64 {
                    return Err("argv count exceeds stream".into());
                }
                let mut argv = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    argv.push(self.take_string()?);
                }
                EventKind::Exec { path, argv }
            }
            4 => EventKind::Exit {
                code: self.zz32(S_MISC)?,
                signal: self.var32(S_MISC)?,
                group_dead: match self.byte(S_MISC)? {
                    0 => false,
                    1 => true,
                    _ => return Err("bad bool".into()),
                },
            },
            5 => EventKind::Signal {
                sig: self.var32(S_MISC)?,
                phase: match self.byte(S_MISC)? {
                    0 => SignalPhase::Generated,
                    1 => SignalPhase::Delivered,
                    _ => return Err("bad signal phase".into()),
                },
                code: self.zz32(S_MISC)?,
                errno: self.zz32(S_MISC)?,
                result: self.zz32(S_MISC)?,
                target_tid: self.var32(S_MISC)?,
            },
            6 => EventKind::EpochMark {
                epoch: self.var32(S_MISC)?,
            },
            7 => EventKind::Sync {
                op: self.var32(S_MISC)?,
                ip: self.var(S_MISC)?,
                object: self.var(S_MISC)?,
            },
            _ => return Err("unknown event kind".into()),
        };
        let seq = self.seq;
        self.seq += 1;
        Ok(Event {
            seq,
            epoch: self.epoch,
            time_ns: self.time,
            cpu: self.cpu,
            pid: self.pid,
            tid: self.tid,
            kind,
        })
    }
}

/// LEB128 read from `buf[*pos..end]`; `None` on truncation or > 64 bits.
#[inline]
fn read_varint(buf: &[u8], pos: &mut usize, end: usize) -> Option<u64> {
    let mut p = *pos;
    // Fast path: single byte.
    if p < end {
        let b = buf[p];
        if b < 0x80 {
            *pos = p + 1;
            return Some(b.into());
        }
    }
    let mut v = 0u64;
    let mut shift = 0u32;
    loop {
        if p >= end {
            return None;
        }
        let b = buf[p];
        p += 1;
        if shift == 63 && b > 1 {
            return None;
        }
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            *pos = p;
            return Some(v);
        }
        shift += 7;
        if shift > 63 {
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_roundtrip() {
        for v in [
            0u64,
            1,
            127,
            128,
            300,
            u32::MAX.into(),
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            let mut p = 0;
            assert_eq!(read_varint(&b, &mut p, b.len()), Some(v));
            assert_eq!(p, b.len());
        }
        for v in [0i64, -1, 1, i64::MIN, i64::MAX] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
        // 11 continuation bytes: rejected, not a panic or a wrap.
        let b = [0xffu8; 11];
        let mut p = 0;
        assert_eq!(read_varint(&b, &mut p, b.len()), None);
    }
}
