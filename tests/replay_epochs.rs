//! Record, then replay: every epoch restored from its checkpoint, run
//! serially and checked against the next one, for our workloads and for
//! real programs nobody here wrote; from the first checkpoint and from each
//! later one on its own; with no side effect on the host.

mod support;

use std::path::Path;

use replay::{ReplayOptions, Report, Status};
use support::*;

fn replay_all(trace: &Path, epoch: Option<u32>) -> Report {
    replay::replay(trace, &ReplayOptions { jobs: 2, epoch }, &|_| {}).expect("replay runs")
}

fn describe(r: &Report) -> String {
    r.epochs
        .iter()
        .map(|e| {
            format!(
                "epoch {} {:?}: {}",
                e.index,
                e.status,
                e.reason.clone().unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Records `cmd`, then replays it whole and epoch by epoch: all verified.
fn record_and_verify(epoch: &str, cmd: &[&str]) -> Recording {
    record_and_verify_with(&[], epoch, cmd)
}

fn record_and_verify_with(extra: &[&str], epoch: &str, cmd: &[&str]) -> Recording {
    let r = record(&[&["--epoch", epoch], extra].concat(), cmd);
    assert_eq!(r.code(), Some(0), "{cmd:?}: stderr: {}", r.stderr());
    assert_complete(&r);
    let report = replay_all(&r.trace, None);
    assert!(
        report.ok(),
        "{cmd:?} did not replay:\n{}",
        describe(&report)
    );
    assert!(report.outputs_match);
    for e in &report.epochs {
        let one = replay_all(&r.trace, Some(e.index));
        assert_eq!(one.epochs.len(), 1);
        assert_eq!(
            one.epochs[0].status,
            Status::Verified,
            "{cmd:?}: epoch {} alone:\n{}",
            e.index,
            describe(&one)
        );
    }
    r
}

#[test]
fn replay_single_threaded_workloads() {
    if !can_record() {
        return;
    }
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f"), b"some file content").unwrap();
    let known = workload("known");
    record_and_verify(
        "20ms",
        &[
            known.to_str().unwrap(),
            dir.path().join("f").to_str().unwrap(),
            dir.path().to_str().unwrap(),
        ],
    );
    let patterns = workload("patterns");
    let r = record_and_verify("50ms", &[patterns.to_str().unwrap(), "3", "120"]);
    assert!(r.open().checkpoints().len() >= 4, "want several epochs");
    record_and_verify("250ms", &[workload("vdsotime").to_str().unwrap()]);
    // Cut inside loops whose iterations differ only in flags and SSE
    // registers: the breakpoint must find the iteration the cut caught.
    let fploop = workload("fploop");
    let fploop = [fploop.to_str().unwrap(), "40000"];
    record_and_verify_with(&["--cut-at-syscall", "0"], "30ms", &fploop);
    // Hash rounds between syscalls: cut where caught, threads are found in
    // user code (by breakpoint); by default they run on to their next
    // syscall and are cut at its entry (stored as interrupted in it and
    // restarted on resume), where replay finds them without one.
    let hashes = workload("bench_replay");
    let hashes = [hashes.to_str().unwrap(), "4000", "8700"];
    let r = record_and_verify_with(&["--cut-at-syscall", "0"], "10ms", &hashes);
    assert!(cut_places(&r).0 > 0, "no cut in user code to find");
    let r = record_and_verify("10ms", &hashes);
    let (user, entry) = cut_places(&r);
    assert!(
        user == 0 && entry > 0,
        "{user} threads cut in user code, {entry} at a syscall entry"
    );
}

/// Threads of later checkpoints caught outside any syscall, and caught at
/// a syscall's entry (interrupted with -ERESTARTNOINTR).
fn cut_places(r: &Recording) -> (usize, usize) {
    let t = r.open();
    let threads: Vec<_> = t
        .checkpoints()
        .iter()
        .skip(1)
        .flat_map(|i| t.checkpoint(i.epoch).unwrap().processes)
        .flat_map(|p| p.threads)
        .collect();
    let user = threads.iter().filter(|th| th.syscall.is_none()).count();
    let entry = threads
        .iter()
        .filter(|th| th.syscall.is_some() && th.regs[10] as i64 == -513)
        .count();
    (user, entry)
}

#[test]
fn replay_real_programs() {
    if !can_record() {
        return;
    }
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    let text: String = (0..20000)
        .map(|i| format!("{} line\n", (i * 7919) % 20000))
        .collect();
    std::fs::write(&input, text).unwrap();
    let input = input.to_str().unwrap();
    let db = dir.path().join("wal.db").display().to_string();
    let big = dir.path().join("big.bin");
    let bytes: Vec<u8> = (0..24u32 << 20).map(|i| (i % 253) as u8).collect();
    std::fs::write(&big, bytes).unwrap();
    let read_whole = format!(
        "import hashlib; d = open('{}', 'rb').read(); print(len(d), hashlib.sha1(d).hexdigest())",
        big.display()
    );
    let remap = format!(
        "import os, mmap, time\np = '{}'\nopen(p, 'w').write('first version\\n')\nf1 = open(p, 'rb')\nm1 = mmap.mmap(f1.fileno(), 0, access=mmap.ACCESS_COPY)\ntime.sleep(0.02)\nopen(p + '.new', 'w').write('second, longer version\\n')\nos.rename(p + '.new', p)\nf2 = open(p, 'rb')\nm2 = mmap.mmap(f2.fileno(), 0, access=mmap.ACCESS_COPY)\ntime.sleep(0.02)\nprint(m1[:], m2[:])",
        dir.path().join("v.txt").display()
    );
    for cmd in [
        vec!["ls", "-la", "/usr/bin"],
        vec!["sort", input],
        vec!["sha256sum", input],
        // libnuma (loaded by procps) reads the memory policy with
        // get_mempolicy and sets it back.
        vec!["ps", "aux"],
        vec!["bash", "-c", "cat /etc/hostname; ls / | wc -l"],
        // timer_create's timer id, SIGALRM, a SIGTERM and SIGCONT to the
        // child and to itself (a SIGCONT to a traced replay stops it once).
        vec!["bash", "-c", "timeout 0.2 sleep 5; echo $?"],
        // A file opened by a relative path after a chdir, then mapped:
        // replay maps the trace's copy of /etc/passwd.
        vec![
            "/usr/bin/python3",
            "-c",
            "import os, mmap; os.chdir('/etc'); f = open('passwd', 'rb'); m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ); print(m[:5])",
        ],
        // A shared writable mapping of a file unlinked at once (as POSIX
        // semaphores are), written and unmapped at once: the thread is held
        // at its mmap until the recorder has copied the file through
        // /proc/PID/map_files; replay maps that copy privately.
        vec![
            "/usr/bin/python3",
            "-c",
            "import os, mmap; p = '/dev/shm/uniplay-test-%d' % os.getpid(); fd = os.open(p, os.O_RDWR | os.O_CREAT); os.write(fd, b'x' * 4096); m = mmap.mmap(fd, 4096); os.unlink(p); m[0:5] = b'hello'; print(m[:6]); m.close()",
        ],
        // A file mapped, replaced (written anew and renamed over), and mapped
        // again, both mappings alive: each replays from its own copy, kept
        // by the time it was mapped (meta.json `file_versions`), and read
        // through the mapping, not the path that names the new file.
        vec!["/usr/bin/python3", "-c", &remap],
        // A poll that a checkpoint cuts short still writes its revents back
        // (zeroes over the previous call's POLLIN): recorded as an output
        // of the interrupted call (a web server attached while it polled
        // diverged in every epoch).
        vec![
            "/usr/bin/python3",
            "-c",
            "import os, select\nr, w = os.pipe()\np = select.poll()\np.register(r, select.POLLIN)\nn = 0\nfor i in range(30):\n    os.write(w, b'x'); n += len(p.poll(1000)); os.read(r, 1); n += len(p.poll(20))\nprint(n)",
        ],
        // One read of 24 MiB, more than the default ring holds: read from
        // the held thread's memory by the recorder.
        vec!["/usr/bin/python3", "-c", &read_whole],
        // SQLite in WAL mode: asks F_GETLK (its answer is an output) and
        // maps its -shm index shared, writing it at once (replay must start
        // from what the file held at the mmap, not from a later copy).
        vec![
            "sqlite3",
            &db,
            "pragma journal_mode=wal; create table t(a, b); with recursive c(x) as (select 1 union all select x+1 from c where x<5000) insert into t select x, hex(randomblob(8)) from c; select count(*) from t where b > '8';",
        ],
    ] {
        record_and_verify("30ms", &cmd);
    }
}

/// Programs that compute for longer than an epoch between syscalls (bc
/// working out digits of pi, bzip2 sorting a block): the checkpoint waits
/// for the computing thread's next syscall, so every cut is one replay can
/// reach by running there (a cut inside the loop it could not find).
#[test]
fn replay_long_computations() {
    if !can_record() {
        return;
    }
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("pi.bc");
    std::fs::write(&script, "scale=1400; 4*a(1)\nquit\n").unwrap();
    let input = dir.path().join("in.txt");
    let text: String = (0..300_000)
        .map(|i: u64| format!("{} {}\n", i.wrapping_mul(2_654_435_761) % 1_000_003, i % 97))
        .collect();
    std::fs::write(&input, text).unwrap();
    for cmd in [
        vec!["bc", "-l", script.to_str().unwrap()],
        vec!["bzip2", "-c", input.to_str().unwrap()],
    ] {
        let r = record_and_verify("50ms", &cmd);
        let (user, entry) = cut_places(&r);
        assert!(
            user == 0 && entry > 0,
            "{cmd:?}: {user} threads cut in user code, {entry} at a syscall entry"
        );
    }
}

/// Checkpoints made by write tracking (only the pages written since the
/// previous cut, copied while stopped) restore and verify like forked ones.
#[test]
fn replay_with_write_tracking() {
    if !can_record() {
        return;
    }
    let _g = serial();
    let tracked = |r: &Recording| {
        let t = r.open();
        t.checkpoints()
            .iter()
            .filter(|c| {
                t.checkpoint(c.epoch)
                    .unwrap()
                    .processes
                    .iter()
                    .any(|p| p.memory == "tracked")
            })
            .count()
    };
    let always = ["--track-writes", "always"];
    let patterns = workload("patterns");
    let r = record_and_verify_with(&always, "50ms", &[patterns.to_str().unwrap(), "3", "120"]);
    assert!(tracked(&r) >= 2, "patterns: write tracking was not used");
    let script = "for i in 1 2 3 4 5; do sleep 0.03; echo $i; done | sort -r; ls /usr/bin | wc -l";
    let r = record_and_verify_with(&always, "20ms", &["bash", "-c", script]);
    assert!(tracked(&r) >= 1, "bash: write tracking was not used");
    // The heap grows in parts that do not merge with the registered one.
    let r = record_and_verify_with(&always, "20ms", &[workload("heapgrow").to_str().unwrap()]);
    assert!(tracked(&r) >= 2, "heapgrow: write tracking was not used");
    let r = record_and_verify_with(
        &always,
        "30ms",
        &[
            "/usr/bin/python3",
            "-c",
            "import time\nb = [bytearray(100000) for _ in range(50)]\nfor i in range(20):\n    b[i][7] = i; time.sleep(0.01)\nprint(sum(x[7] for x in b))",
        ],
    );
    assert!(tracked(&r) >= 2, "python3: write tracking was not used");
}

/// `record --pid`: a process that was running (its rseq area registered
/// before recording began, so unknown to the log) replays from every
/// checkpoint, with and without write tracking.
#[test]
fn replay_an_attached_process() {
    if !can_record() {
        return;
    }
    let _g = serial();
    for track in ["never", "always"] {
        // Long enough for a recorder started cold (over a second at times
        // in a fresh clone) to attach before it ends.
        let (mut target, _) = spawn_until_line(
            std::process::Command::new(workload("patterns"))
                .args(["6", "400"])
                .stderr(std::process::Stdio::null()),
        );
        let dir = tempfile::tempdir().unwrap();
        let trace = dir.path().join("trace");
        let pid = target.id().to_string();
        let out = std::process::Command::new(uniplay())
            .args([
                "record",
                "--quiet",
                "--epoch",
                "40ms",
                "--track-writes",
                track,
            ])
            .args(["--pid", &pid, "-o"])
            .arg(&trace)
            .output()
            .unwrap();
        target.wait().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report = replay_all(&trace, None);
        assert!(report.epochs.len() >= 5, "want several epochs");
        assert!(
            report.ok(),
            "--track-writes {track}:\n{}",
            describe(&report)
        );
        for e in &report.epochs {
            let one = replay_all(&trace, Some(e.index));
            assert_eq!(
                one.epochs[0].status,
                Status::Verified,
                "epoch {} alone",
                e.index
            );
        }
    }
}

/// `record --pid PID --epoch 100ms`, stopped with SIGINT once it records:
/// its directory (kept alive), trace and output.
fn record_attached_until_ctrl_c(
    pid: u32,
) -> (tempfile::TempDir, std::path::PathBuf, std::process::Output) {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace");
    let rec = std::process::Command::new(uniplay())
        .args(["record", "--quiet", "--epoch", "100ms", "--pid"])
        .arg(pid.to_string())
        .arg("-o")
        .arg(&trace)
        .spawn()
        .unwrap();
    wait_until_recording(&trace, std::time::Duration::from_millis(700));
    let killed = std::process::Command::new("kill")
        .args(["-INT", &rec.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = rec.wait_with_output().unwrap();
    (dir, trace, out)
}

/// Attach, then Ctrl-C: the recorder stops recording before it detaches
/// (detaching cuts the target's sleep short, which the log must not show),
/// and the last epoch, which ends with no checkpoint, replays verified.
#[test]
fn replay_an_attached_process_after_ctrl_c() {
    if !can_record() {
        return;
    }
    let _g = serial();
    let (mut target, _) = spawn_until_line(
        std::process::Command::new(workload("spin")).stderr(std::process::Stdio::null()),
    );
    let (_dir, trace, out) = record_attached_until_ctrl_c(target.id());
    let _ = target.kill();
    let _ = target.wait();
    assert_eq!(out.status.code(), Some(0), "record after SIGINT");
    let report = replay_all(&trace, None);
    assert!(report.epochs.len() >= 4, "want several epochs");
    assert!(report.ok(), "{}", describe(&report));
}

/// Attach to a running multithreaded Python (a producer and a consumer
/// thread on a queue), then Ctrl-C: each thread's log ends wherever the
/// recording stopped, often at a lock call whose effect the other thread
/// then waits for (the consumer's `sem_post`, the GIL's unlock): replay
/// runs such a last call through to its return. Before it did, the last
/// epoch diverged in four recordings of five. Another epoch may diverge
/// on the interpreter's switch request, an atomic flag (see
/// `replay_multithreaded_real_programs`).
#[test]
fn replay_an_attached_multithreaded_process_after_ctrl_c() {
    if !can_record() {
        return;
    }
    let _g = serial();
    let script = "import threading, time, queue\n\
        q = queue.Queue()\n\
        def prod():\n    i = 0\n    while True:\n        q.put(i); i += 1; time.sleep(0.001)\n\
        def cons():\n    s = 0\n    while True:\n        s += q.get()\n\
        for f in (prod, cons):\n    threading.Thread(target=f, daemon=True).start()\n\
        print('ready', flush=True)\n\
        time.sleep(60)\n";
    let (target, _) = spawn_until_line(
        std::process::Command::new("/usr/bin/python3")
            .args(["-c", script])
            .stderr(std::process::Stdio::null()),
    );
    let mut target = KillOnDrop(target);
    let (_dir, trace, out) = record_attached_until_ctrl_c(target.id());
    let _ = target.kill();
    assert_eq!(out.status.code(), Some(0), "record after SIGINT");
    let report = replay_all(&trace, None);
    assert!(report.epochs.len() >= 4, "want several epochs");
    let last = report.epochs.last().expect("epochs");
    assert_eq!(last.status, Status::Verified, "{}", describe(&report));
    assert!(
        report.verified + 1 >= report.epochs.len(),
        "{}",
        describe(&report)
    );
}

/// git reads loose objects by mapping each, reading it and unmapping it,
/// the next one landing at the same address: the recorder must copy the
/// file that was mapped, not the one mapped there when its copier got to
/// it (which diverged about one recording in three). Three recordings.
#[test]
fn replay_git_log_over_loose_objects() {
    if !can_record() {
        return;
    }
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path();
    let git = |args: &[&str]| {
        let st = std::process::Command::new("git")
            .arg("-C")
            .arg(repo)
            .args(["-c", "user.name=t", "-c", "user.email=t@t"])
            .args(args)
            .stdout(std::process::Stdio::null())
            .status()
            .expect("run git");
        assert!(st.success(), "git {args:?}");
    };
    git(&["init", "-q"]);
    for i in 0..60 {
        let body: String = (0..i).map(|n| format!("{n} ")).collect();
        std::fs::write(repo.join(format!("f{}.txt", i % 7)), body).unwrap();
        git(&["add", "-A"]);
        git(&["commit", "-qm", &format!("commit {i}")]);
    }
    let repo = repo.to_str().unwrap();
    for _ in 0..3 {
        record_and_verify("50ms", &["git", "-C", repo, "log", "-p"]);
    }
}

/// A thread makes syscalls while the main thread execs with a megabyte of
/// arguments: the thread's last syscalls come after the exec's entry in
/// the log (replay runs the exec at its return, after them; it was taken
/// for an exec inside the epoch and skipped), and the recorder copies the
/// first megabyte of the argv block (its size was masked to 20 bits, and
/// left five bytes of it).
#[test]
fn replay_an_exec_from_a_threaded_process() {
    if !can_record() {
        return;
    }
    let _g = serial();
    for _ in 0..2 {
        record_and_verify("20ms", &[workload("exec_threads").to_str().unwrap()]);
    }
}

/// Shells, make and the compiler, python's subprocess: processes forked
/// inside an epoch are replayed from their birth (their pre-exec code), and
/// every exec starts an epoch whose checkpoint holds the new image.
#[test]
fn replay_processes_that_fork_and_exec() {
    if !can_record() {
        return;
    }
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("a.c"),
        "int f(int);\nint main(void){return f(20) == 6765 ? 0 : 1;}\n",
    )
    .unwrap();
    std::fs::write(
        d.join("b.c"),
        "int f(int n){return n < 2 ? n : f(n-1) + f(n-2);}\n",
    )
    .unwrap();
    std::fs::write(
        d.join("Makefile"),
        "run: prog\n\t./prog\nprog: a.o b.o\n\tcc -o prog a.o b.o\n%.o: %.c\n\tcc -O2 -c $<\n",
    )
    .unwrap();
    let make_dir = d.to_str().unwrap();
    let runs = [
        vec!["sh", "-c", "for i in 1 2 3; do ls /usr/bin | sort -r | head -3 | wc -c; done"],
        vec!["make", "-s", "-C", make_dir, "run"],
        vec![
            "/usr/bin/python3",
            "-c",
            // Not `echo hi | tr ...` under popen: dash's SIGCHLD handler then
            // runs in the middle of its user code when the first child
            // exits, which replay cannot place (see README, Limitations).
            "import subprocess, os; print(subprocess.run(['ls', '/'], capture_output=True).stdout[:9]); print(os.popen('tr a-z A-Z < /etc/hostname').read())",
        ],
    ];
    for cmd in runs {
        let r = record_and_verify("250ms", &cmd);
        let trace = r.open();
        let execs = trace.checkpoints().len();
        assert!(
            execs >= 3,
            "{cmd:?}: every exec starts an epoch, got {execs} checkpoints"
        );
        let report = replay_all(&r.trace, None);
        let processes =
            |e: &replay::EpochReport| e.processes.iter().map(|p| p.pid).collect::<Vec<_>>();
        let born_inside = report.epochs.iter().any(|e| {
            let held = trace.checkpoint(e.index).unwrap().processes.len();
            processes(e).len() > held
        });
        assert!(
            born_inside,
            "{cmd:?}: no process was replayed from its fork"
        );
        assert!(
            report
                .epochs
                .iter()
                .flat_map(|e| &e.processes)
                .any(|p| p.ended_at_exec),
            "{cmd:?}: no epoch ended at an exec"
        );
    }
}

/// Programs whose epochs sometimes end in a state the serial run cannot
/// reach (threads synchronising without syscalls, a thread caught in a loop
/// at the cut): the replay must finish cleanly, verify most epochs, and
/// never call a diverged epoch verified. The rates are in the README.
fn record_and_mostly_verify(epoch: &str, cmd: &[&str]) -> Report {
    let r = record(&["--epoch", epoch], cmd);
    assert_eq!(r.code(), Some(0), "{cmd:?}: stderr: {}", r.stderr());
    assert_complete(&r);
    let report = replay_all(&r.trace, None);
    let verified = report.verified;
    assert!(
        verified * 2 >= report.epochs.len(),
        "{cmd:?}: only {verified} of {} epochs verified:\n{}",
        report.epochs.len(),
        describe(&report)
    );
    for e in report
        .epochs
        .iter()
        .filter(|e| e.status == Status::Verified)
    {
        assert!(
            e.first_divergence.is_none() && e.processes.iter().all(|p| p.differences.is_empty())
        );
    }
    report
}

/// make's jobserver pattern: SIGCHLD blocked but for pselect's temporary
/// mask, so every child's SIGCHLD cuts a pselect short. Replay skips the
/// call, so it installs that mask for the delivery and puts the thread's
/// own in the handler's frame (every epoch diverged before). One epoch may
/// still diverge on dead stack bytes at start-up (seen rarely, unrelated).
#[test]
fn replay_signals_through_a_calls_mask() {
    if !can_record() {
        return;
    }
    let _g = serial();
    let r = record(
        &["--epoch", "10ms"],
        &[workload("pselect").to_str().unwrap(), "40"],
    );
    assert_eq!(r.code(), Some(0), "stderr: {}", r.stderr());
    assert!(r.stdout().contains("still blocked: 1"), "{}", r.stdout());
    let report = replay_all(&r.trace, None);
    let diverged = report
        .epochs
        .iter()
        .filter(|e| e.status != Status::Verified)
        .count();
    assert!(
        report.epochs.len() >= 5 && diverged <= 1,
        "{diverged} of {} epochs not verified:\n{}",
        report.epochs.len(),
        describe(&report)
    );
    assert!(report.outputs_match);
}

/// `make -j2`: its jobserver waits in pselect6 with SIGCHLD let in only by
/// the call's mask, and children finish while it waits, is in a handler or
/// spawns the next compiler. Known limitations (README) aside — two
/// compilers computing side by side at a cut ("not reached"), epochs
/// skipped because a vfork parent kept an exec's checkpoint from starting
/// at the exec — at most one epoch may diverge (a residual seen in about
/// one run in four: a word of make's stack or of a mapping, not found yet);
/// before the signal-mask fixes most runs had one or more.
#[test]
fn replay_parallel_make() {
    if !can_record() {
        return;
    }
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    for i in 0..8 {
        std::fs::write(
            dir.path().join(format!("f{i}.c")),
            format!("int f{i}(int x) {{ return x * {i} + {i}; }}\n"),
        )
        .unwrap();
    }
    std::fs::write(
        dir.path().join("Makefile"),
        "all: $(patsubst %.c,%.o,$(wildcard *.c))\n%.o: %.c\n\tcc -O1 -c $< -o $@\n",
    )
    .unwrap();
    let r = record(
        &["--epoch", "100ms"],
        &["make", "-s", "-j2", "-C", dir.path().to_str().unwrap()],
    );
    assert_eq!(r.code(), Some(0), "stderr: {}", r.stderr());
    let report = replay_all(&r.trace, None);
    let diverged: Vec<_> = report
        .epochs
        .iter()
        .filter(|e| e.status == Status::Diverged)
        .filter(|e| {
            e.first_divergence
                .as_ref()
                .is_none_or(|d| d.actual != "not reached")
        })
        .collect();
    let verified = report.verified;
    assert!(
        diverged.len() <= 1 && verified * 5 >= report.epochs.len() * 3 && report.outputs_match,
        "{}",
        describe(&report)
    );
}

/// SIGALRM every 2 ms landing in the middle of a loop: each is delivered
/// at the state the recorder logged (found with a breakpoint), so the
/// handler's count shows up where it did. Cuts that fall next to a
/// delivery still diverge at times (README, Limitations): most epochs must
/// verify, none falsely.
#[test]
fn replay_signals_in_user_code() {
    if !can_record() {
        return;
    }
    let _g = serial();
    let report = record_and_mostly_verify("20ms", &[workload("alarms").to_str().unwrap()]);
    assert!(report.outputs_match, "the handler's counts differ");
}

/// Threads that hand their results over under a mutex and a condition
/// variable, waiting in between: with the order of their lock calls
/// recorded (the default), every epoch verifies, from the first
/// checkpoint and from each on its own, and the replay followed that
/// order (155 of 155 epochs in 30 recordings here, some on the last,
/// late-resume interleaving).
#[test]
fn replay_threads_with_mutex_and_condvar() {
    if !can_record() {
        return;
    }
    let _g = serial();
    let r = record(
        &["--epoch", "40ms"],
        &[workload("mild_threads").to_str().unwrap()],
    );
    assert_eq!(r.code(), Some(0), "stderr: {}", r.stderr());
    assert_complete(&r);
    let report = replay_all(&r.trace, None);
    let threads = report.epochs.iter().map(|e| e.threads).max().unwrap_or(0);
    assert!(threads >= 5, "no epoch held the worker threads");
    assert_eq!(
        report.verified,
        report.epochs.len(),
        "{}",
        describe(&report)
    );
    let followed: u64 = report
        .epochs
        .iter()
        .flat_map(|e| &e.processes)
        .map(|p| p.sync_events)
        .sum();
    assert!(followed >= 100, "only {followed} lock calls followed");
    assert!(report.outputs_match && report.exit_status_match != Some(false));
    for e in report
        .epochs
        .iter()
        .filter(|e| e.status == Status::Verified)
    {
        let one = replay_all(&r.trace, Some(e.index));
        assert_eq!(
            one.epochs[0].status,
            Status::Verified,
            "epoch {} alone:\n{}",
            e.index,
            describe(&one)
        );
    }
}

/// A real multithreaded program whose threads hand work over under libc's
/// locks and condition variables, mostly without contention (no futex
/// call shows it): Python's `queue.Queue` between three threads (the GIL
/// and the queue's locks are pthread mutexes and condition variables).
/// With the lock order recorded, every epoch verified in 42 of 42 epochs of
/// five recordings here (without it, 18 of 19); the GIL's switch requests
/// are an atomic flag, not a lock call, so an epoch in about ten
/// recordings still diverges (README, Limitations): one diverged epoch is
/// let through, none may be called verified falsely (checked by
/// `record_and_mostly_verify`). zstd, xz and sort: `cargo xtask bench
/// threads`.
#[test]
fn replay_multithreaded_real_programs() {
    if !can_record() {
        return;
    }
    let _g = serial();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/workloads/handover.py");
    let report = record_and_mostly_verify("20ms", &["/usr/bin/python3", script.to_str().unwrap()]);
    let diverged = report.epochs.len() - report.verified;
    assert!(diverged <= 1, "{}", describe(&report));
    assert!(report.outputs_match);
    let followed: u64 = report
        .epochs
        .iter()
        .flat_map(|e| &e.processes)
        .map(|p| p.sync_events)
        .sum();
    assert!(
        followed > 0,
        "no lock calls followed:\n{}",
        describe(&report)
    );
}

/// A process whose main thread calls exit_group while another thread is
/// blocked: its last thread dies of the group's SIGKILL, its status is
/// exit_group's; replay reaps the threads (a wait on the leader alone
/// would never return) and compares that status.
#[test]
fn replay_exit_group_with_a_thread_alive() {
    if !can_record() {
        return;
    }
    let _g = serial();
    let script = "import threading, time\nt = threading.Thread(target=time.sleep, args=(10,), daemon=True)\nt.start(); time.sleep(0.1); print('bye')";
    record_and_verify("30ms", &["/usr/bin/python3", "-c", script]);
}

#[test]
fn replay_python() {
    if !can_record() {
        return;
    }
    let _g = serial();
    // Debian's python3 itself (a pyenv shim would be a bash script).
    record_and_mostly_verify(
        "30ms",
        &[
            "/usr/bin/python3",
            "-c",
            "import json, hashlib; print(json.dumps([hashlib.md5(str(i).encode()).hexdigest() for i in range(20000)])[:40])",
        ],
    );
}

#[test]
fn replay_reports_a_race_as_diverged() {
    if !can_record() {
        return;
    }
    let _g = serial();
    let r = record(&["--epoch", "50ms"], &[workload("racy").to_str().unwrap()]);
    assert_eq!(r.code(), Some(0), "stderr: {}", r.stderr());
    let report = replay_all(&r.trace, None);
    assert!(!report.ok(), "a racy program replayed as verified");
    assert!(
        report.epochs.iter().any(|e| e.status == Status::Diverged),
        "{}",
        describe(&report)
    );
}

#[test]
fn replay_has_no_side_effects() {
    if !can_record() {
        return;
    }
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    // A loopback server the recording talks to.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let script = format!(
        "echo data > {d}/a; mv {d}/a {d}/b; rm {d}/b; echo kept > {d}/kept; \
         python3 -c \"import socket; s=socket.create_connection(('127.0.0.1', {port})); s.sendall(b'hello')\"; \
         sleep 5 & kill $!"
    );
    let r = record(&["--epoch", "30ms"], &["sh", "-c", &script]);
    assert_eq!(r.code(), Some(0), "stderr: {}", r.stderr());
    let mut connections = 0;
    while listener.accept().is_ok() {
        connections += 1;
    }
    assert_eq!(connections, 1, "the recording connects once");
    // Undo what the recording did, then replay.
    std::fs::remove_file(dir.path().join("kept")).unwrap();
    // Whatever each epoch's verdict, replaying had no effect.
    let report = replay_all(&r.trace, None);
    assert!(!report.epochs.is_empty());
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "replay touched the filesystem: {left:?}");
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert!(listener.accept().is_err(), "replay opened a connection");
}
