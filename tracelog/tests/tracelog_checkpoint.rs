mod support;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use bytes::Bytes;
use support::*;
use tracelog::{
    Checkpoint, CheckpointWriter, Error, Event, EventKind, Mapping, ProcessState, ThreadState,
    Trace, TraceWriter, WriterOptions, PAGE_SIZE,
};

const BASE: u64 = 0x10000;
const PAGES: u64 = 16;

fn page(pid: u32, addr: u64, version: u32) -> Vec<u8> {
    let mut rng = Rng(u64::from(pid) << 40 ^ addr ^ u64::from(version) << 20 | 1);
    (0..PAGE_SIZE).map(|_| rng.next() as u8).collect()
}

fn mapping(start: u64, end: u64, stored: bool, path: &str) -> Mapping {
    Mapping {
        start,
        end,
        perms: if stored { "rw-p" } else { "r-xp" }.into(),
        path: path.into(),
        stored,
        ..Mapping::default()
    }
}

fn process(pid: u32, maps: Vec<Mapping>, full: bool) -> ProcessState {
    ProcessState {
        pid,
        ppid: 1,
        exe: "/bin/test".into(),
        cwd: "/".into(),
        maps,
        threads: vec![ThreadState {
            tid: pid,
            regs: (0..27).collect(),
            fpregs: vec![7; 512],
            sigmask: 0,
            syscall: Some(0),
            rseq: (0, 0),
        }],
        full,
        ..ProcessState::default()
    }
}

fn state(epoch: u32, processes: Vec<ProcessState>) -> Checkpoint {
    Checkpoint {
        epoch,
        time_ns: 1_000 * u64::from(epoch + 1),
        first_seq: 0,
        stop_ns: 500,
        reason: if epoch == 0 { "start" } else { "timer" }.into(),
        processes,
    }
}

type Image = BTreeMap<u64, Bytes>;

/// Writes checkpoint `epoch` with `pages` (pid, addr, version), updating
/// `model` (pid -> image).
fn write_cp(
    cw: &CheckpointWriter,
    cp: &Checkpoint,
    pages: &[(u32, u64, u32)],
    model: &mut BTreeMap<u32, Image>,
) -> tracelog::CheckpointInfo {
    let mut sink = cw.begin(cp.epoch).unwrap();
    for &(pid, addr, v) in pages {
        let data = page(pid, addr, v);
        sink.page(pid, addr, &data).unwrap();
        model
            .entry(pid)
            .or_default()
            .insert(addr, Bytes::from(data));
    }
    sink.finish(cp).unwrap()
}

fn restrict(image: &Image, maps: &[Mapping]) -> Image {
    image
        .iter()
        .filter(|(&a, _)| {
            maps.iter()
                .any(|m| m.stored && m.start <= a && a + PAGE_SIZE as u64 <= m.end)
        })
        .map(|(&a, d)| (a, d.clone()))
        .collect()
}

fn finish_empty_trace(d: &Path) -> TraceWriter {
    TraceWriter::create(d, meta(), WriterOptions::default()).unwrap()
}

#[test]
fn checkpoints_round_trip_with_incremental_pages() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("t");
    let mut w = finish_empty_trace(&d);
    let cw = CheckpointWriter::new(&d).unwrap();
    let maps = vec![
        mapping(BASE, BASE + PAGES * 4096, true, "[heap]"),
        mapping(0x400000, 0x401000, false, "/bin/test"),
    ];
    let mut model = BTreeMap::new();
    let mut expect = Vec::new();

    // Epoch 0: everything.
    let all: Vec<_> = (0..PAGES).map(|i| (100, BASE + i * 4096, 0)).collect();
    let cp0 = state(0, vec![process(100, maps.clone(), true)]);
    let info = write_cp(&cw, &cp0, &all, &mut model);
    assert_eq!(
        (info.epoch, info.pages, info.threads, info.processes),
        (0, 16, 1, 1)
    );
    assert!(info.bytes > 16 * 4096);
    expect.push(model.clone());

    // Epoch 1: two pages changed; process 200 appears (full).
    let cp1 = state(
        1,
        vec![
            process(100, maps.clone(), false),
            process(200, vec![mapping(BASE, BASE + 2 * 4096, true, "")], true),
        ],
    );
    let p1 = [
        (100, BASE + 2 * 4096, 1),
        (100, BASE + 5 * 4096, 1),
        (200, BASE, 1),
        (200, BASE + 4096, 1),
    ];
    write_cp(&cw, &cp1, &p1, &mut model);
    expect.push(model.clone());

    // Epoch 2: page 5 again and 7; the heap shrinks by 2 pages (pages past
    // the new end drop out); a page outside any stored mapping is dropped.
    let mut maps2 = maps.clone();
    maps2[0].end -= 2 * 4096;
    let cp2 = state(
        2,
        vec![
            process(100, maps2.clone(), false),
            process(200, vec![mapping(BASE, BASE + 2 * 4096, true, "")], false),
        ],
    );
    let p2 = [
        (100, BASE + 5 * 4096, 2),
        (100, BASE + 7 * 4096, 2),
        (100, 0x400000, 2),
    ];
    write_cp(&cw, &cp2, &p2, &mut model);
    expect.push(model.clone());
    w.push(ev(1, 100, EventKind::EpochMark { epoch: 0 }))
        .unwrap();
    w.finish(meta()).unwrap();

    let t = Trace::open(&d).unwrap();
    let infos = t.checkpoints();
    assert_eq!(infos.iter().map(|i| i.epoch).collect::<Vec<_>>(), [0, 1, 2]);
    assert_eq!(
        infos.iter().map(|i| i.pages).collect::<Vec<_>>(),
        [16, 4, 3]
    );
    assert!(
        t.checkpoint_damage().is_empty(),
        "{:?}",
        t.checkpoint_damage()
    );

    let got1 = t.checkpoint(1).unwrap();
    assert_eq!(got1.processes[0].pages_stored, 2);
    assert_eq!(got1.processes[1].pages_stored, 2);
    assert_eq!(got1.processes[0].threads, cp1.processes[0].threads);
    assert_eq!(got1.reason, "timer");

    let maps_at = [&maps, &maps, &maps2];
    for e in 0..3u32 {
        let img = t.checkpoint_memory(e, 100).unwrap();
        let want = restrict(&expect[e as usize][&100], maps_at[e as usize]);
        assert_eq!(img, want, "epoch {e}");
        assert_eq!(img.len() as u64, if e < 2 { 16 } else { 14 });
    }
    assert_eq!(
        t.checkpoint_memory(2, 200).unwrap(),
        expect[1][&200],
        "unchanged process inherits its pages"
    );
    assert!(matches!(
        t.checkpoint_memory(0, 200),
        Err(Error::NoProcess { epoch: 0, pid: 200 })
    ));
    assert!(matches!(
        t.checkpoint_memory(9, 100),
        Err(Error::NoCheckpoint { epoch: 9 })
    ));
    // Bad pages are refused.
    let mut sink = cw.begin(3).unwrap();
    assert!(matches!(
        sink.page(1, 0x1000, &[0; 10]),
        Err(Error::InvalidPage { .. })
    ));
    assert!(matches!(
        sink.page(1, 0x1001, &[0; 4096]),
        Err(Error::InvalidPage { .. })
    ));
    assert!(matches!(
        cw.begin(2),
        Err(Error::CheckpointExists { epoch: 2 })
    ));
}

#[test]
fn crash_before_state_json_is_ignored_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("t");
    let w = finish_empty_trace(&d);
    let cw = CheckpointWriter::new(&d).unwrap();
    let maps = vec![mapping(BASE, BASE + 4 * 4096, true, "")];
    let mut model = BTreeMap::new();
    let all: Vec<_> = (0..4).map(|i| (100, BASE + i * 4096, 0)).collect();
    write_cp(
        &cw,
        &state(0, vec![process(100, maps.clone(), true)]),
        &all,
        &mut model,
    );
    // Checkpoint 1: pages written, then the recorder dies (no finish).
    let mut sink = cw.begin(1).unwrap();
    for i in 0..300 {
        sink.page(100, BASE + (i % 4) * 4096, &page(100, 0, 9))
            .unwrap();
    }
    drop(sink);
    drop(w);

    let t = Trace::open(&d).unwrap();
    assert_eq!(
        t.checkpoints().iter().map(|i| i.epoch).collect::<Vec<_>>(),
        [0]
    );
    assert!(matches!(
        t.checkpoint(1),
        Err(Error::NoCheckpoint { epoch: 1 })
    ));
    assert!(matches!(
        t.checkpoint_memory(1, 100),
        Err(Error::NoCheckpoint { epoch: 1 })
    ));
    let damage = t.checkpoint_damage();
    assert_eq!(damage.len(), 1, "{damage:?}");
    let msg = damage[0].to_string();
    assert!(
        msg.contains("000001") && msg.contains("state.json"),
        "{msg}"
    );
    assert_eq!(t.checkpoint_memory(0, 100).unwrap(), model[&100]);

    // The checkpoint can be written again.
    let info = write_cp(
        &cw,
        &state(1, vec![process(100, maps, false)]),
        &[],
        &mut model,
    );
    assert_eq!(info.pages, 0);
    let t = Trace::open(&d).unwrap();
    assert!(t.checkpoint_damage().is_empty());
    assert_eq!(t.checkpoint_memory(1, 100).unwrap(), model[&100]);
}

fn frame_offsets(path: &Path) -> Vec<u64> {
    let b = fs::read(path).unwrap();
    let mut off = 16usize;
    let mut v = Vec::new();
    while off + 64 <= b.len() {
        v.push(off as u64);
        let clen = u32::from_le_bytes(b[off + 8..off + 12].try_into().unwrap()) as usize;
        off += 64 + clen;
    }
    v
}

#[test]
fn damaged_pages_keep_intact_frames() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("t");
    let w = finish_empty_trace(&d);
    drop(w);
    let cw = CheckpointWriter::new(&d).unwrap();
    let n = 600u64; // 256 + 256 + 88 pages: three frames
    let maps = vec![mapping(BASE, BASE + n * 4096, true, "")];
    let all: Vec<_> = (0..n).map(|i| (100, BASE + i * 4096, 0)).collect();
    let mut model = BTreeMap::new();
    write_cp(
        &cw,
        &state(0, vec![process(100, maps, true)]),
        &all,
        &mut model,
    );
    let pages = d.join("checkpoints/000000/pages.tlf");
    let offs = frame_offsets(&pages);
    assert_eq!(offs.len(), 3);
    let pristine = fs::read(&pages).unwrap();

    // A flipped payload byte in the second frame.
    let mut b = pristine.clone();
    b[offs[1] as usize + 64 + 100] ^= 0xff;
    fs::write(&pages, &b).unwrap();
    let t = Trace::open(&d).unwrap();
    match t.checkpoint_memory(0, 100) {
        Err(Error::Corrupt { offset, .. }) => assert_eq!(offset, offs[1]),
        other => panic!("expected damage, got {:?}", other.map(|m| m.len())),
    }
    let (img, damage) = t.checkpoint_memory_lossy(0, 100).unwrap();
    assert_eq!(img.len(), 256);
    assert!(img.iter().all(|(a, p)| model[&100][a] == *p));
    assert_eq!(damage.len(), 1);
    let msg = damage[0].to_string();
    assert!(msg.contains(&format!("offset {}", offs[1])), "{msg}");
    assert_eq!(t.checkpoint_damage().len(), 1);

    // Truncated inside the third frame.
    fs::write(&pages, &pristine[..pristine.len() - 10]).unwrap();
    let (img, damage) = t.checkpoint_memory_lossy(0, 100).unwrap();
    assert_eq!(img.len(), 512);
    assert!(matches!(damage[..], [Error::Corrupt { offset, .. }] if offset == offs[2]));

    // Arbitrary damage never panics.
    let mut rng = Rng(99);
    for _ in 0..200 {
        let mut b = pristine.clone();
        let at = rng.range(0, b.len() as u64) as usize;
        b[at] ^= 1 << rng.range(0, 8);
        if rng.range(0, 4) == 0 {
            b.truncate(rng.range(0, b.len() as u64) as usize);
        }
        fs::write(&pages, &b).unwrap();
        let _ = t.checkpoint_memory_lossy(0, 100).unwrap();
        let _ = t.checkpoint_damage();
        let _ = t.checkpoints();
    }
}

fn du(p: &Path) -> u64 {
    let mut total = 0;
    for e in fs::read_dir(p).unwrap() {
        let e = e.unwrap();
        let md = e.metadata().unwrap();
        total += if md.is_dir() { du(&e.path()) } else { md.len() };
    }
    total
}

fn epoch_events(epoch: u32, n: u64, t0: u64) -> Vec<Event> {
    let mut v = vec![Event {
        epoch,
        ..ev(t0, 100, EventKind::EpochMark { epoch })
    }];
    for i in 0..n {
        let t = t0 + 1000 * (i + 1);
        v.push(Event {
            epoch,
            ..ev(
                t,
                100 + (i % 2) as u32,
                syscall(GETPPID, &[], 99, t - 200, vec![]),
            )
        });
    }
    v
}

#[test]
fn flight_recorder_keeps_last_epochs() {
    const K: u32 = 3;
    const EPOCHS: u32 = 50;
    const HEAP: u64 = 32;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("t");
    let opts = WriterOptions {
        segment_epochs: true,
        keep_epochs: Some(K),
        frame_events: 64,
        ..WriterOptions::default()
    };
    let mut w = TraceWriter::create(&d, meta(), opts).unwrap();
    let cw = CheckpointWriter::new(&d).unwrap();
    let maps = vec![mapping(BASE, BASE + HEAP * 4096, true, "[heap]")];
    let mut model = BTreeMap::new();
    let mut images = Vec::new();
    let mut all_events = Vec::new();
    let mut usage = Vec::new();
    let mut seq = 0u64;
    for e in 0..EPOCHS {
        let pages: Vec<_> = if e == 0 {
            (0..HEAP).map(|i| (100, BASE + i * 4096, 0)).collect()
        } else {
            vec![
                (100, BASE + u64::from(e % 32) * 4096, e),
                (100, BASE + u64::from((e * 7) % 32) * 4096, e),
            ]
        };
        let mut cp = state(e, vec![process(100, maps.clone(), e == 0)]);
        cp.first_seq = seq;
        write_cp(&cw, &cp, &pages, &mut model);
        images.push(model[&100].clone());
        let evs = epoch_events(e, 100 + u64::from(e), 1_000_000 * u64::from(e + 1));
        for x in &evs {
            w.push(x.clone()).unwrap();
        }
        for (i, mut x) in evs.into_iter().enumerate() {
            x.seq = seq + i as u64;
            all_events.push(x);
        }
        seq = all_events.len() as u64;
        if e + 1 >= K {
            w.drop_epochs_before(e + 1 - K).unwrap();
            assert_eq!(w.first_epoch(), e + 1 - K);
        }
        w.sync().unwrap();
        usage.push(du(&d));
        if e == 20 {
            // A live, segmented trace reads back too.
            let t = Trace::open(&d).unwrap();
            let first = 21 - K;
            let (got, err) = drain(t.events());
            assert!(err.is_none(), "{err:?}");
            let want: Vec<_> = all_events
                .iter()
                .filter(|x| x.epoch >= first)
                .cloned()
                .collect();
            assert_eq!(got, want);
            assert_eq!(
                t.checkpoint_memory(first, 100).unwrap(),
                images[first as usize]
            );
        }
    }
    let meta = w.finish(meta()).unwrap();
    let first = EPOCHS - K;
    assert_eq!(meta.first_epoch, first);
    assert_eq!(meta.keep_epochs, Some(K));
    assert!(meta.event_segments);
    let kept: Vec<_> = all_events
        .iter()
        .filter(|x| x.epoch >= first)
        .cloned()
        .collect();
    assert_eq!(meta.first_seq, kept[0].seq);
    assert_eq!(
        meta.epochs.iter().map(|e| e.index).collect::<Vec<_>>(),
        (first..EPOCHS).collect::<Vec<_>>()
    );
    assert!(meta.epochs.iter().all(|e| e.checkpoint));
    assert_eq!(meta.epochs[0].start_seq, kept[0].seq);
    assert_eq!(meta.epochs[0].events, 101 + u64::from(first));
    assert_eq!(meta.event_counts["epoch"], u64::from(K));
    assert_eq!(
        meta.event_counts["syscall"],
        kept.len() as u64 - u64::from(K)
    );

    let t = Trace::open(&d).unwrap();
    assert!(t.damage().is_none(), "{:?}", t.damage());
    let (got, err) = drain(t.events());
    assert!(err.is_none(), "{err:?}");
    assert_eq!(got, kept);
    for e in first..EPOCHS {
        let (got, err) = drain(t.events_in_epoch(e));
        assert!(err.is_none());
        let want: Vec<_> = kept.iter().filter(|x| x.epoch == e).cloned().collect();
        assert_eq!(got, want);
        assert!(t
            .frames()
            .iter()
            .all(|f| f.epoch_min == f.epoch_max && (f.epoch_min != e || f.segment == e)));
    }
    let (got, _) = drain(t.events_from_seq(kept[5].seq));
    assert_eq!(got[..], kept[5..]);
    // Checkpoints: only the kept ones, and the oldest still has the full
    // image (rebased), as do the others.
    assert_eq!(
        t.checkpoints().iter().map(|c| c.epoch).collect::<Vec<_>>(),
        (first..EPOCHS).collect::<Vec<_>>()
    );
    for e in first..EPOCHS {
        let img = t.checkpoint_memory(e, 100).unwrap();
        assert_eq!(img.len() as u64, HEAP);
        assert_eq!(img, images[e as usize], "epoch {e}");
    }
    assert!(t.checkpoint_damage().is_empty());
    // Only the kept segments remain.
    let mut segs: Vec<_> = fs::read_dir(d.join("events"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.len() == 10)
        .collect();
    segs.sort();
    assert_eq!(segs, ["000047.tlf", "000048.tlf", "000049.tlf"]);

    // Disk use is bounded: it stops growing with the number of epochs.
    let settled = usage[10];
    let max_after = *usage[10..].iter().max().unwrap();
    assert!(max_after < settled + settled / 2, "usage grows: {usage:?}");
    assert!(usage[EPOCHS as usize - 1] < 3 * (HEAP * 4096 + 4096 * 8));
}

#[test]
fn segmented_trace_round_trips_and_survives_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let events = every_kind();
    let opts = WriterOptions {
        segment_epochs: true,
        frame_events: 4,
        ..WriterOptions::default()
    };
    let d = dir.path().join("t");
    let meta = write_trace(&d, &events, opts.clone());
    assert!(meta.event_segments);
    let t = Trace::open(&d).unwrap();
    assert!(t.damage().is_none());
    let (got, err) = drain(t.events());
    assert!(err.is_none(), "{err:?}");
    assert_eq!(got, expected(&events));
    assert!(d.join("events/000000.tlf").exists());
    assert!(d.join("events/000001.tlf").exists());
    assert!(d.join("events/000001.index.tlf").exists());
    assert!(!d.join("events.tlf").exists());
    let (e1, _) = drain(t.events_in_epoch(1));
    assert_eq!(e1.len(), 4, "the epoch mark, two sync events, a syscall");

    // Killed: no finish, no index for the last segment.
    let d2 = dir.path().join("killed");
    let mut w = TraceWriter::create(&d2, support::meta(), opts.clone()).unwrap();
    for e in &events {
        w.push(e.clone()).unwrap();
    }
    w.sync().unwrap();
    std::mem::forget(w);
    let t = Trace::open(&d2).unwrap();
    let (got, err) = drain(t.events());
    assert!(err.is_none(), "{err:?}");
    assert_eq!(got, expected(&events));

    // A missing first segment is damage when nothing was dropped.
    fs::remove_file(d.join("events/000000.tlf")).unwrap();
    let t = Trace::open(&d).unwrap();
    assert!(t.damage().is_some());

    // drop_epochs_before needs segments.
    let mut w = TraceWriter::create(
        &dir.path().join("single"),
        support::meta(),
        WriterOptions::default(),
    )
    .unwrap();
    assert!(matches!(
        w.drop_epochs_before(1),
        Err(Error::Unsupported { .. })
    ));
}

#[test]
fn add_file_dedups_identical_content() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("t");
    let w = finish_empty_trace(&d);
    let cw = CheckpointWriter::new(&d).unwrap();
    let a = dir.path().join("a.so");
    let b = dir.path().join("b.so");
    let c = dir.path().join("c.so");
    let content: Vec<u8> = (0..200_000u32).map(|i| (i * 31 % 251) as u8).collect();
    fs::write(&a, &content).unwrap();
    fs::write(&b, &content).unwrap();
    fs::write(&c, b"other").unwrap();
    let ha = cw.add_file(&a).unwrap();
    let hb = cw.clone().add_file(&b).unwrap();
    let hc = cw.add_file(&c).unwrap();
    assert_eq!(ha, hb);
    assert_ne!(ha, hc);
    assert_eq!(ha.len(), 64);
    assert_eq!(cw.add_file(&a).unwrap(), ha);
    let stored: Vec<_> = fs::read_dir(d.join("files")).unwrap().collect();
    assert_eq!(stored.len(), 2);
    drop(w);
    let t = Trace::open(&d).unwrap();
    assert_eq!(fs::read(t.file_path(&ha).unwrap()).unwrap(), content);
    assert_eq!(fs::read(t.file_path(&hc).unwrap()).unwrap(), b"other");
    assert!(t.file_path("../meta.json").is_none());
    assert!(t.file_path(&"0".repeat(64)).is_none());
    assert!(matches!(
        cw.add_file(&dir.path().join("missing")),
        Err(Error::Io { .. })
    ));
}

#[test]
fn checkpoint_writer_is_send() {
    fn send_sync<T: Send + Sync + Clone>() {}
    fn send<T: Send>() {}
    send_sync::<CheckpointWriter>();
    send::<tracelog::PageSink>();
    send::<TraceWriter>();
}
