mod support;

use support::*;
use tracelog::{Error, Trace, TraceState, TraceWriter, WriterOptions, FORMAT_VERSION};

#[test]
fn every_kind_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let events = every_kind();
    for frame_events in [1, 3, 16384] {
        let d = dir.path().join(format!("t{frame_events}"));
        let meta = write_trace(&d, &events, opts(frame_events));
        assert_eq!(meta.state, TraceState::Complete);
        assert_eq!(meta.format_version, FORMAT_VERSION);
        assert_eq!(meta.event_counts["syscall"], 8);
        assert_eq!(meta.event_counts["exec"], 2);
        assert_eq!(meta.event_counts["epoch"], 1);
        assert_eq!(meta.event_counts["fork"], 1);
        assert_eq!(meta.epochs.len(), 2);
        assert_eq!(meta.epochs[1].index, 1);
        assert_eq!(meta.epochs[1].start_seq, 16);

        let trace = Trace::open(&d).unwrap();
        assert_eq!(trace.state(), TraceState::Complete);
        assert_eq!(trace.meta(), &meta);
        assert!(trace.damage().is_none());
        let (got, err) = drain(trace.events());
        assert!(err.is_none(), "{err:?}");
        assert_eq!(got, expected(&events));
        // Frames never span epochs: the EpochMark at seq 16 starts a frame.
        assert_eq!(
            trace.frames().len(),
            16usize.div_ceil(frame_events) + (events.len() - 16).div_ceil(frame_events)
        );
    }
}

#[test]
fn big_payload_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("t");
    // Incompressible 20 kB payload referenced twice.
    let mut rng = Rng(7);
    let big: bytes::Bytes = (0..20_000)
        .map(|_| rng.next() as u8)
        .collect::<Vec<u8>>()
        .into();
    let events = vec![
        ev(10, 1, syscall(0, &[3], 20_000, 5, vec![out(1, 0x10, &big)])),
        ev(
            20,
            1,
            syscall(0, &[3], 20_000, 15, vec![out(1, 0x10, &big)]),
        ),
    ];
    write_trace(&d, &events, opts(1));
    let blobs = std::fs::metadata(d.join("blobs.tlf")).unwrap().len();
    assert!(
        (20_000..30_000).contains(&blobs),
        "blobs.tlf is {blobs} bytes"
    );
    let events_len = std::fs::metadata(d.join("events.tlf")).unwrap().len();
    assert!(events_len < 1000, "events.tlf is {events_len} bytes");
    let (got, err) = read_all(&d);
    assert!(err.is_none());
    assert_eq!(got, expected(&events));
}

#[test]
fn large_payloads_compressed_unless_random() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("t");
    let mut rng = Rng(11);
    let random: bytes::Bytes = (0..1 << 20)
        .map(|_| rng.next() as u8)
        .collect::<Vec<u8>>()
        .into();
    let text: bytes::Bytes = b"all work and no play "
        .iter()
        .copied()
        .cycle()
        .take(1 << 20)
        .collect::<Vec<u8>>()
        .into();
    let events = vec![
        ev(
            10,
            1,
            syscall(0, &[3], 1 << 20, 5, vec![out(1, 0x10, &random)]),
        ),
        ev(
            20,
            1,
            syscall(0, &[3], 1 << 20, 15, vec![out(1, 0x10, &text)]),
        ),
    ];
    write_trace(&d, &events, opts(1));
    let blobs = std::fs::metadata(d.join("blobs.tlf")).unwrap().len();
    // The random megabyte stored as it is, the text one in a few kB.
    assert!(
        ((1 << 20)..(1 << 20) + 64 * 1024).contains(&blobs),
        "blobs.tlf is {blobs} bytes"
    );
    let (got, err) = read_all(&d);
    assert!(err.is_none());
    assert_eq!(got, expected(&events));
}

#[test]
fn filtered_iteration() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("t");
    let mut events = synthetic(10_000, 3);
    for e in &mut events[6000..] {
        e.epoch = 1;
    }
    write_trace(&d, &events, opts(1000));
    let all = expected(&events);
    let trace = Trace::open(&d).unwrap();
    assert_eq!(trace.frames().len(), 10);

    let (got, err) = drain(trace.events_from_seq(4321));
    assert!(err.is_none());
    assert_eq!(got, all[4321..]);
    assert_eq!(drain(trace.events_from_seq(10_000)).0.len(), 0);

    let (from, to) = (all[2500].time_ns, all[7500].time_ns);
    let (got, _) = drain(trace.events_in_time(from, to));
    let want: Vec<_> = all
        .iter()
        .filter(|e| e.time_ns >= from && e.time_ns < to)
        .cloned()
        .collect();
    assert_eq!(got, want);

    let (got, _) = drain(trace.events_in_epoch(1));
    assert_eq!(got, all[6000..]);
    let (got, _) = drain(trace.events_in_epoch(0));
    assert_eq!(got, all[..6000]);
    assert_eq!(drain(trace.events_in_epoch(7)).0.len(), 0);
}

#[test]
fn refuses_non_empty_dir_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("junk"), b"x").unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let err = TraceWriter::create(dir.path(), meta(), WriterOptions::default()).unwrap_err();
    assert!(matches!(err, Error::DirNotEmpty { .. }), "{err}");
    assert!(dir.path().join("junk").exists());

    let o = WriterOptions {
        force: true,
        ..WriterOptions::default()
    };
    let mut w = TraceWriter::create(dir.path(), meta(), o.clone()).unwrap();
    assert!(!dir.path().join("junk").exists());
    assert!(!dir.path().join("sub").exists());
    // A second writer on a locked directory is refused even with force.
    let err = TraceWriter::create(dir.path(), meta(), o).unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    w.push(ev(1, 1, syscall(1, &[], 0, 0, vec![]))).unwrap();
    w.finish(meta()).unwrap();
}

#[test]
fn stats_and_incomplete_state_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("t");
    let mut w = TraceWriter::create(&d, meta(), opts(100)).unwrap();
    let handle = w.stats_handle();
    for e in synthetic(1000, 9) {
        w.push(e).unwrap();
    }
    w.sync().unwrap();
    let s = handle.get();
    assert_eq!(s.events, 1000);
    assert_eq!(s.frames, 10);
    assert!(s.bytes_written > 0);
    assert_eq!(w.stats(), s);
    let mut m = meta();
    m.state = TraceState::Incomplete {
        reason: "ring buffer overflow".into(),
    };
    let m = w.finish(m).unwrap();
    assert!(matches!(m.state, TraceState::Incomplete { .. }));
    let t = Trace::open(&d).unwrap();
    assert_eq!(t.state().to_string(), "incomplete: ring buffer overflow");
}

#[test]
fn index_is_rebuilt_when_missing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("t");
    let events = synthetic(5000, 4);
    write_trace(&d, &events, opts(700));
    let with_index = Trace::open(&d).unwrap().frames().to_vec();
    std::fs::remove_file(d.join("index.tlf")).unwrap();
    let t = Trace::open(&d).unwrap();
    assert_eq!(t.frames(), &with_index[..]);
    assert!(t.damage().is_none());
    assert_eq!(drain(t.events()).0, expected(&events));
}

#[test]
fn background_failure_is_reported_with_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("t");
    let mut w = TraceWriter::create(&d, meta(), opts(1)).unwrap();
    // Someone else's file where the blob store must be created: the
    // background thread fails, like it would on a full disk.
    std::fs::write(d.join("blobs.tlf"), b"in the way").unwrap();
    let big = bytes::Bytes::from(vec![7u8; 10_000]);
    let mut result = Ok(());
    for i in 0..10 {
        result = w.push(ev(i, 1, syscall(0, &[3], 10_000, 0, vec![out(1, 0, &big)])));
        if result.is_err() {
            break;
        }
    }
    let err = result.and_then(|()| w.sync()).unwrap_err();
    let Error::Io { path, .. } = &err else {
        panic!("expected an Io error, got {err:?}");
    };
    assert!(path.ends_with("blobs.tlf"), "{err}");
    assert!(std::error::Error::source(&err).is_some());
    assert!(matches!(
        w.push(ev(99, 1, syscall(1, &[], 0, 0, vec![]))),
        Err(Error::WriterFailed)
    ));
}
