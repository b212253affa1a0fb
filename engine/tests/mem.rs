//! Memory through the `crust` command line: incremental dumps against real processes, and a
//! restore refused because the vDSO of the image is not this kernel's.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use images::pb::MmEntry;
use images::{ImageDir, ImageKind};

const CRUST: &str = env!("CARGO_BIN_EXE_crust");

/// Restored tasks are re-parented to us when `crust restore -d` exits, so we can reap them.
fn subreaper() {
    nix::sys::prctl::set_child_subreaper(true).unwrap();
}

fn crust(args: &[&str]) -> std::process::Output {
    Command::new(CRUST)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("crust runs")
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| !s.contains(") Z ") && !s.contains(") X "))
}

fn wait_for_file(p: &Path) -> String {
    let until = Instant::now() + Duration::from_secs(20);
    while Instant::now() < until {
        if let Ok(s) = std::fs::read_to_string(p) {
            if !s.is_empty() {
                return s;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("{} did not appear", p.display());
}

fn kill_and_reap(pid: i32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
    let until = Instant::now() + Duration::from_secs(5);
    while alive(pid) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
}

/// A victim with no descriptor leading to us: stdio on /dev/null, working in `dir`.
fn spawn(dir: &Path, program: &str, args: &[&str]) -> Child {
    // Through a shell that closes what this test inherited: a victim holding a pipe of its
    // environment would be refused as leading outside the dumped tree.
    let close = r#"for fd in /proc/$$/fd/*; do fd=${fd##*/}; [ "$fd" -gt 2 ] 2>/dev/null && eval "exec $fd>&-"; done; exec "$0" "$@""#;
    Command::new("bash")
        .args(["-c", close, program])
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("victim starts")
}

/// A python victim with 64 MiB of random bytes. It writes their hash to `ready`; when `dirty`
/// appears it changes one byte in each of the first 1024 pages (4 MiB, a 16th) and writes the
/// new hash to `dirtied`; whenever `check` appears it writes the current hash to `hash`.
const DIRTY_VICTIM: &str = r#"
import os, time, hashlib
os.closerange(3, 1 << 16)
buf = bytearray(os.urandom(1 << 20)) * 64
h = lambda: hashlib.sha256(buf).hexdigest()
open('ready.tmp', 'w').write(h()); os.rename('ready.tmp', 'ready')
done = False
while True:
    if not done and os.path.exists('dirty'):
        for i in range(0, 4 << 20, 4096):
            buf[i] = (buf[i] + 1) % 256
        done = True
        open('dirtied.tmp', 'w').write(h()); os.rename('dirtied.tmp', 'dirtied')
    if os.path.exists('check'):
        os.remove('check')
        open('hash.tmp', 'w').write(h()); os.rename('hash.tmp', 'hash')
    time.sleep(0.01)
"#;

/// Whether the abstract unix socket `name` is bound (read off /proc/net/unix: connecting
/// would itself make a keeper hand its trackers over and go).
fn keeper_listens(name: &str) -> bool {
    std::fs::read_to_string("/proc/net/unix")
        .unwrap()
        .lines()
        .any(|l| l.split_whitespace().last() == Some(&format!("@{name}")))
}

/// Whether a process listens on the abstract unix socket `name`.
fn keeper_answers(name: &str) -> bool {
    use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
    use std::os::fd::AsRawFd;
    let s = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    connect(
        s.as_raw_fd(),
        &UnixAddr::new_abstract(name.as_bytes()).unwrap(),
    )
    .is_ok()
}

/// Once the victim `pid` working in `work` is ready, pre-dumps it into `work/pre`; returns
/// what it wrote to `ready` and the pre-dump's directory.
fn pre_dump_when_ready(work: &Path, pid: i32) -> (String, std::path::PathBuf) {
    let ready = wait_for_file(&work.join("ready"));
    let pre = work.join("pre");
    let out = crust(&[
        "pre-dump",
        "-t",
        &pid.to_string(),
        "-D",
        pre.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (ready, pre)
}

/// The final dump in `dump` of a [`DIRTY_VICTIM`] stored the 4 MiB written since its
/// pre-dump, and not much more (python's own pages).
fn assert_stored_only_the_written(dump: &Path) {
    let stored = pages_size(dump);
    assert!(
        stored < 16 << 20,
        "the final dump stored {stored} bytes: more than the 4 MiB written and python's own"
    );
    assert!(
        stored >= 4 << 20,
        "the written 4 MiB are missing: {stored} bytes"
    );
}

/// Bytes of pages a dump stored: every part of its pages (`pages-0.img`, `pages-0.N.img`).
fn pages_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().starts_with("pages-"))
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

/// Restores the victim `pid` dumped in `dump` and checks its `memory` hashes to what it last
/// wrote (`dirtied`).
fn restore_and_check(work: &Path, dump: &Path, pid: i32, dirtied: &str, memory: &str) {
    let out = crust(&["restore", "-D", dump.to_str().unwrap(), "-d"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(work.join("check"), "").unwrap();
    let after = wait_for_file(&work.join("hash"));
    kill_and_reap(pid);
    assert_eq!(
        after, dirtied,
        "{memory} after restore is not what the task last wrote"
    );
}

#[test]
fn pre_dump_then_dump_stores_only_what_was_written() {
    subreaper();
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path();
    let mut victim = spawn(work, "python3", &["-c", DIRTY_VICTIM]);
    let pid = victim.id() as i32;
    let (before, pre) = pre_dump_when_ready(work, pid);
    assert!(alive(pid), "a pre-dump leaves the task running");
    // The task keeps no descriptor of crust's.
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap() {
        let target = std::fs::read_link(fd.unwrap().path()).unwrap_or_default();
        assert!(
            !target.to_string_lossy().contains("userfaultfd"),
            "the tracker stayed in the task"
        );
    }
    let pre_pages = pages_size(&pre);
    assert!(pre_pages >= 64 << 20, "pre-dump stored {pre_pages} bytes");
    let keeper = ImageDir::open(&pre)
        .unwrap()
        .read_one::<MmEntry>(ImageKind::Mm, Some(pid as u32))
        .unwrap()
        .track
        .expect("the pre-dump armed write tracking");

    std::fs::write(work.join("dirty"), "").unwrap();
    let dirtied = wait_for_file(&work.join("dirtied"));
    assert_ne!(before, dirtied);
    let dump = work.join("dump");
    let out = crust(&[
        "dump",
        "-t",
        &pid.to_string(),
        "-D",
        dump.to_str().unwrap(),
        "--prev-images-dir",
        "../pre",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    victim.wait().unwrap();
    assert_stored_only_the_written(&dump);
    assert_eq!(
        std::fs::read_link(dump.join(images::PARENT_LINK)).unwrap(),
        Path::new("../pre")
    );
    // The keeper lent its trackers to the dump and goes once the task is gone.
    let until = Instant::now() + Duration::from_secs(10);
    while keeper_listens(&keeper) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !keeper_listens(&keeper),
        "the tracking keeper {keeper} outlived its task"
    );
    assert!(!keeper_answers(&keeper));

    restore_and_check(work, &dump, pid, &dirtied, "memory");
}

#[test]
fn a_final_dump_that_fails_leaves_the_task_tracked_for_the_next() {
    subreaper();
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path();
    let mut victim = spawn(work, "python3", &["-c", DIRTY_VICTIM]);
    let pid = victim.id() as i32;
    pre_dump_when_ready(work, pid);
    std::fs::write(work.join("dirty"), "").unwrap();
    wait_for_file(&work.join("dirtied"));
    let final_dump = |name: &str, fault: Option<&str>| {
        let dir = work.join(name);
        let mut c = Command::new(CRUST);
        c.args(["dump", "-t", &pid.to_string(), "-D", dir.to_str().unwrap()])
            .args(["--prev-images-dir", "../pre"])
            .stdin(Stdio::null());
        if let Some(f) = fault {
            c.env("CRUST_FAULT", f);
        }
        (c.output().expect("crust runs"), dir)
    };
    // Fails at its very end, when it has used the trackers: the task runs on...
    let (out, _) = final_dump("failed", Some("dump-before-inventory"));
    assert!(!out.status.success());
    assert!(alive(pid), "a failed dump leaves the task running");
    // ...still tracked: the dump tried again stores only what was written since the pre-dump.
    let (out, dump) = final_dump("dump", None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    victim.wait().unwrap();
    // Tracking lost, the dump would store all 64 MiB.
    assert_stored_only_the_written(&dump);
}

#[test]
fn a_prev_images_dir_that_is_not_there_fails_and_leaves_the_task() {
    subreaper();
    let tmp = tempfile::tempdir().unwrap();
    let mut victim = spawn(tmp.path(), "sleep", &["100"]);
    let pid = victim.id() as i32;
    std::thread::sleep(Duration::from_millis(50));
    let dir = tmp.path().join("dump");
    let out = crust(&[
        "dump",
        "-t",
        &pid.to_string(),
        "-D",
        dir.to_str().unwrap(),
        "--prev-images-dir",
        "../nowhere",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("nowhere") && err.lines().count() == 1, "{err}");
    assert!(alive(pid), "a failed dump leaves the task running");
    assert!(
        !dir.join(images::PARENT_LINK).exists(),
        "the failed dump left its parent link"
    );
    victim.kill().unwrap();
    victim.wait().unwrap();
}

#[test]
fn restore_refuses_an_image_whose_vdso_differs() {
    subreaper();
    let tmp = tempfile::tempdir().unwrap();
    let mut victim = spawn(tmp.path(), "sleep", &["100"]);
    let pid = victim.id() as i32;
    std::thread::sleep(Duration::from_millis(50));
    let dir = tmp.path().join("dump");
    let out = crust(&["dump", "-t", &pid.to_string(), "-D", dir.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    victim.wait().unwrap();

    // The image as another kernel build would have made it: an entry point elsewhere.
    let images = ImageDir::open(&dir).unwrap();
    let original: MmEntry = images.read_one(ImageKind::Mm, Some(pid as u32)).unwrap();
    let mut other = original.clone();
    let vdso = other.vdso.as_mut().expect("the dump records the vDSO");
    let sym = vdso
        .symbols
        .iter_mut()
        .find(|s| s.name == "__vdso_clock_gettime")
        .expect("x86_64 vDSOs export clock_gettime");
    sym.offset += 0x40;
    vdso.hash ^= 1;
    images
        .write_one(ImageKind::Mm, Some(pid as u32), &other)
        .unwrap();
    images.commit_sections().unwrap();
    let out = crust(&["restore", "-D", dir.to_str().unwrap(), "-d"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "restore went on with a foreign vDSO");
    assert!(
        err.contains("vDSO")
            && err.contains("__vdso_clock_gettime")
            && err.contains(&pid.to_string()),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!alive(pid), "a refused restore created the task");

    // The true image restores.
    images
        .write_one(ImageKind::Mm, Some(pid as u32), &original)
        .unwrap();
    images.commit_sections().unwrap();
    let out = crust(&["restore", "-D", dir.to_str().unwrap(), "-d"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(alive(pid));
    kill_and_reap(pid);
}

#[test]
fn check_reports_pre_dump_and_snapshots() {
    for feature in ["pre-dump", "snapshots"] {
        let out = crust(&["check", "--feature", feature]);
        assert!(
            out.status.success(),
            "{feature}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!("{feature}: ok")
        );
    }
}

/// Like [`DIRTY_VICTIM`], with its 64 MiB in `MAP_SHARED | MAP_ANONYMOUS` memory (a shmem
/// object of the images).
const DIRTY_SHMEM_VICTIM: &str = r#"
import os, time, hashlib, mmap
os.closerange(3, 1 << 16)
buf = mmap.mmap(-1, 64 << 20, mmap.MAP_SHARED)
buf[:] = os.urandom(64 << 20)
h = lambda: hashlib.sha256(buf).hexdigest()
open('ready.tmp', 'w').write(h()); os.rename('ready.tmp', 'ready')
done = False
while True:
    if not done and os.path.exists('dirty'):
        for i in range(0, 4 << 20, 4096):
            buf[i] = (buf[i] + 1) % 256
        done = True
        open('dirtied.tmp', 'w').write(h()); os.rename('dirtied.tmp', 'dirtied')
    if os.path.exists('check'):
        os.remove('check')
        open('hash.tmp', 'w').write(h()); os.rename('hash.tmp', 'hash')
    time.sleep(0.01)
"#;

/// Pages of the shmem objects of `dir` stored there (not left in the parent).
fn shmem_pages_stored(dir: &Path) -> (u64, u64) {
    let images = ImageDir::open(dir).unwrap();
    let (mut stored, mut all) = (0, 0);
    for id in images.ids(ImageKind::ShmemPagemap).unwrap() {
        for p in images.read_shmem_pagemap(id).unwrap().1 {
            all += p.nr_pages;
            if p.flags == images::PE_PRESENT {
                stored += p.nr_pages;
            }
        }
    }
    (stored, all)
}

#[test]
fn shared_memory_in_an_incremental_dump_stores_only_what_changed() {
    subreaper();
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path();
    let mut victim = spawn(work, "python3", &["-c", DIRTY_SHMEM_VICTIM]);
    let pid = victim.id() as i32;
    let (_, pre) = pre_dump_when_ready(work, pid);
    let (pre_stored, _) = shmem_pages_stored(&pre);
    assert!(
        pre_stored >= 16384,
        "the pre-dump stored {pre_stored} shmem pages"
    );

    std::fs::write(work.join("dirty"), "").unwrap();
    let dirtied = wait_for_file(&work.join("dirtied"));
    let full = work.join("full");
    let out = crust(&[
        "dump",
        "-t",
        &pid.to_string(),
        "-D",
        full.to_str().unwrap(),
        "--leave-running",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dump = work.join("dump");
    let out = crust(&[
        "dump",
        "-t",
        &pid.to_string(),
        "-D",
        dump.to_str().unwrap(),
        "--prev-images-dir",
        "../pre",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    victim.wait().unwrap();
    let (full_stored, _) = shmem_pages_stored(&full);
    let (stored, all) = shmem_pages_stored(&dump);
    assert!(
        full_stored >= 16384,
        "a full dump stored {full_stored} shmem pages"
    );
    assert!(
        (1024..2048).contains(&stored),
        "the incremental dump stored {stored} of {all} shmem pages, for 1024 written (a full one: {full_stored})"
    );
    assert!(
        pages_size(&dump) < pages_size(&full) / 4,
        "the incremental pages file is not smaller"
    );

    restore_and_check(work, &dump, pid, &dirtied, "shared memory");
}

#[test]
fn an_incremental_dump_writes_scattered_pages_into_room_made_ahead() {
    subreaper();
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path();
    // One page in sixteen of the 64 MiB written: 1024 runs of a page each.
    let scattered = DIRTY_VICTIM.replace("range(0, 4 << 20, 4096)", "range(0, 64 << 20, 16 << 12)");
    let mut victim = spawn(work, "python3", &["-c", &scattered]);
    let pid = victim.id() as i32;
    pre_dump_when_ready(work, pid);
    std::fs::write(work.join("dirty"), "").unwrap();
    let dirtied = wait_for_file(&work.join("dirtied"));
    let dump = work.join("dump");
    let out = crust(&[
        "dump",
        "-t",
        &pid.to_string(),
        "-D",
        dump.to_str().unwrap(),
        "--prev-images-dir",
        "../pre",
        "-v4",
        "-o",
        "dump.log",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    victim.wait().unwrap();
    let log = std::fs::read_to_string(dump.join("dump.log")).unwrap();
    let room: u64 = log
        .split("room made ahead for ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no room made ahead:\n{log}"));
    assert!(room >= 1024, "room for {room} pages, 1024 were written");
    assert_stored_only_the_written(&dump);
    // What the dump did not use is given back: no blocks past the end of the file.
    let first = std::fs::metadata(dump.join("pages-0.img")).unwrap();
    use std::os::unix::fs::MetadataExt;
    let allocated = first.blocks() * 512;
    assert!(
        allocated <= first.len().next_multiple_of(1 << 16),
        "pages-0.img keeps {allocated} bytes allocated for {} bytes",
        first.len()
    );

    restore_and_check(work, &dump, pid, &dirtied, "memory");
}
