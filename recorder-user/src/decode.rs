//! Raw ring-buffer records to typed values. Nothing here trusts the bytes:
//! a short or unknown record is an error, not a panic.

use recorder_common::*;

/// One record read from a ring.
#[derive(Debug, Clone, Copy)]
pub enum Record<'a> {
    Syscall(SyscallRec),
    Chunk(ChunkHdr, &'a [u8]),
    /// Output bytes left in the thread's memory (`REC_FETCH`).
    Fetch(ChunkHdr),
    Switch(SwitchRec),
    Fork(ForkRec),
    Exec {
        hdr: RecHeader,
        old_tid: u32,
        path: &'a [u8],
    },
    Exit(ExitRec),
    Signal(SignalRec),
    Sync(SyncRec),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed ring record (kind {kind}, {len} bytes)")]
pub struct DecodeError {
    pub kind: u32,
    pub len: usize,
}

/// Reads a `T` from the front of `buf`, if it is long enough.
fn read<T: Copy>(buf: &[u8]) -> Option<T> {
    if buf.len() < std::mem::size_of::<T>() {
        return None;
    }
    // SAFETY: the length is checked above; T is a repr(C) record of integers
    // (every bit pattern valid) and read_unaligned has no alignment needs.
    Some(unsafe { std::ptr::read_unaligned(buf.as_ptr().cast::<T>()) })
}

pub fn decode(buf: &[u8]) -> Result<Record<'_>, DecodeError> {
    let kind = read::<u32>(buf).unwrap_or(0);
    let err = DecodeError {
        kind,
        len: buf.len(),
    };
    let rec = match kind {
        REC_SYSCALL => read(buf).map(Record::Syscall),
        REC_CHUNK => read::<ChunkHdr>(buf).and_then(|h| {
            let data = buf.get(std::mem::size_of::<ChunkHdr>()..)?;
            let data = data.get(..h.len as usize)?;
            Some(Record::Chunk(h, data))
        }),
        REC_FETCH => read(buf).map(Record::Fetch),
        REC_SWITCH => read(buf).map(Record::Switch),
        REC_FORK => read(buf).map(Record::Fork),
        REC_EXEC => read::<RecHeader>(buf).and_then(|hdr| {
            let off = std::mem::offset_of!(ExecRec, path);
            let old_tid = read::<u32>(buf.get(std::mem::offset_of!(ExecRec, old_tid)..)?)?;
            let len = read::<u32>(buf.get(std::mem::offset_of!(ExecRec, path_len)..)?)? as usize;
            let path = buf.get(off..off + len.min(EXEC_PATH_MAX))?;
            // The kernel helper counts the NUL.
            let path = path.strip_suffix(&[0]).unwrap_or(path);
            Some(Record::Exec { hdr, old_tid, path })
        }),
        REC_EXIT => read(buf).map(Record::Exit),
        REC_SIGNAL => read(buf).map(Record::Signal),
        REC_SYNC => read(buf).map(Record::Sync),
        _ => None,
    };
    rec.ok_or(err)
}

/// Views a record as bytes, the way the eBPF side writes it (for tests).
pub fn as_bytes<T: Copy>(rec: &T) -> Vec<u8> {
    // SAFETY: T is a repr(C) plain-data record; we copy its bytes.
    unsafe { std::slice::from_raw_parts((rec as *const T).cast::<u8>(), std::mem::size_of::<T>()) }
        .to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_syscall_and_chunk() {
        let rec = SyscallRec {
            hdr: RecHeader {
                kind: REC_SYSCALL,
                tid: 7,
                ..Default::default()
            },
            nr: 0,
            ret: 3,
            ..Default::default()
        };
        let Record::Syscall(s) = decode(&as_bytes(&rec)).unwrap() else {
            panic!()
        };
        assert_eq!((s.hdr.tid, s.ret), (7, 3));

        let h = ChunkHdr {
            hdr: RecHeader {
                kind: REC_CHUNK,
                ..Default::default()
            },
            len: 3,
            ..Default::default()
        };
        let mut b = as_bytes(&h);
        b.extend_from_slice(b"abcdef");
        let Record::Chunk(_, data) = decode(&b).unwrap() else {
            panic!()
        };
        assert_eq!(data, b"abc");
    }

    #[test]
    fn decode_rejects_short_and_unknown() {
        let rec = SyscallRec {
            hdr: RecHeader {
                kind: REC_SYSCALL,
                ..Default::default()
            },
            ..Default::default()
        };
        let b = as_bytes(&rec);
        assert!(decode(&b[..40]).is_err());
        assert!(decode(&[]).is_err());
        assert!(decode(&[99, 0, 0, 0, 0, 0, 0, 0]).is_err());
        let h = ChunkHdr {
            hdr: RecHeader {
                kind: REC_CHUNK,
                ..Default::default()
            },
            len: 100,
            ..Default::default()
        };
        assert!(
            decode(&as_bytes(&h)).is_err(),
            "chunk longer than its record"
        );
    }
}
