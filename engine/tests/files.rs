//! The `crust` command line on files leading outside the tree and on file validation:
//! pipes shared with a process outside the dumped tree (`--external`, `--inherit-fd`), files
//! changed between dump and restore (`--skip-file-validation`), the ghost limit, files linked
//! back with `--link-remap` (and the links cleaned up), `--file-locks` at restore, and leases
//! being broken.

// Victims are killed by crust and reaped with waitpid, which clippy cannot see.
#![allow(clippy::zombie_processes)]

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::process::{Child, Command, Stdio};

const CRUST: &str = env!("CARGO_BIN_EXE_crust");

fn subreaper() {
    nix::sys::prctl::set_child_subreaper(true).unwrap();
}

/// A python victim on pipes to this test: runs `setup`, says "ready", then evaluates each
/// line it reads and prints the result.
fn victim(setup: &str) -> Child {
    let script = format!(
        "import os, sys\nos.closerange(3, 1 << 16)\n{setup}\nprint('ready', flush=True)\n\
         for line in sys.stdin:\n    print(eval(line), flush=True)\n"
    );
    let mut c = Command::new("python3")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 is needed by these tests");
    assert_eq!(read_line(c.stdout.as_mut().unwrap()), "ready");
    c
}

fn read_line(r: &mut impl Read) -> String {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while r.read(&mut b).unwrap() == 1 && b[0] != b'\n' {
        line.push(b[0]);
    }
    String::from_utf8(line).unwrap()
}

fn pipe_ino(pid: u32, fd: i32) -> u64 {
    let t = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).unwrap();
    let t = t.to_string_lossy();
    t.strip_prefix("pipe:[")
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or_else(|| panic!("fd {fd} of {pid} is {t}, no pipe"))
        .parse()
        .unwrap()
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap();
    let msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert!(msg.lines().count() <= 1, "not one line: {msg:?}");
    assert!(!msg.contains("panicked"), "{msg}");
    (out.status.success(), msg)
}

fn kill(pid: u32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid as i32), None);
}

/// A restore of `img` must fail with `expected` in its message and leave no task `pid`;
/// with `--skip-file-validation` it must then succeed.
fn refused_then_restored_unchecked(img: &std::path::Path, pid: u32, expected: &str) {
    let img = img.to_str().unwrap();
    let (ok, msg) = run(Command::new(CRUST).args(["restore", "-D", img, "-d"]));
    assert!(!ok, "restored over a changed file");
    assert!(msg.contains(expected), "{msg}");
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    let (ok, msg) =
        run(Command::new(CRUST).args(["restore", "-D", img, "-d", "--skip-file-validation"]));
    assert!(ok, "{msg}");
}

#[test]
fn pipe_to_outside_is_refused_then_inherited() {
    subreaper();
    let mut v = victim("x = 6 * 7");
    let pid = v.id();
    let (ino_in, ino_out) = (pipe_ino(pid, 0), pipe_ino(pid, 1));
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().to_str().unwrap();
    let me = std::process::id();

    // Refused, naming the task, its fd, the pipe and who else holds it; the victim runs on.
    let (ok, msg) = run(Command::new(CRUST).args(["dump", "-t", &pid.to_string(), "-D", dir]));
    assert!(!ok);
    assert!(
        msg.contains(&format!(
            "pid {pid} fd 0: pipe:[{ino_in}] leads outside the dumped tree"
        )) && msg.contains(&format!("pid {me} fd ")),
        "{msg}"
    );
    v.stdin.as_mut().unwrap().write_all(b"x\n").unwrap();
    assert_eq!(read_line(v.stdout.as_mut().unwrap()), "42");

    // Named as external, both pipes are left alone at dump...
    let (ok, msg) = run(Command::new(CRUST).args([
        "dump",
        "-t",
        &pid.to_string(),
        "-D",
        dir,
        "--external",
        &format!("pipe[{ino_in}]"),
        "--external",
        &format!("pipe:[{ino_out}]"),
    ]));
    assert!(ok, "{msg}");
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid as i32), None);

    // ...restore refuses to make them up...
    let (ok, msg) = run(Command::new(CRUST).args(["restore", "-D", dir, "-d"]));
    assert!(!ok);
    assert!(
        msg.contains("was outside the dumped tree: restore with --inherit-fd fd[N]:pipe:["),
        "{msg}"
    );
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());

    // ...and takes them from crust's own fds: the restored victim answers on the old pipes.
    let stdin: OwnedFd = v.stdin.take().unwrap().into();
    let stdout: OwnedFd = v.stdout.take().unwrap().into();
    let (ok, msg) = run(Command::new(CRUST)
        .args([
            "restore",
            "-D",
            dir,
            "-d",
            "--inherit-fd",
            &format!("fd[0]:pipe:[{ino_in}]"),
            "--inherit-fd",
            &format!("fd[1]:pipe:[{ino_out}]"),
        ])
        .stdin(Stdio::from(stdin.try_clone().unwrap()))
        .stdout(Stdio::from(stdout.try_clone().unwrap())));
    assert!(ok, "{msg}");
    let mut w = std::fs::File::from(stdin);
    let mut r = std::fs::File::from(stdout);
    w.write_all(b"x + 1\n").unwrap();
    assert_eq!(read_line(&mut r), "43");
    assert_eq!(pipe_ino(pid, 0), ino_in);
    kill(pid);
}

#[test]
fn bad_external_and_inherit_fd_specs_are_named() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().to_str().unwrap();
    let mut v = victim("");
    let pid = v.id().to_string();
    let (ok, msg) =
        run(Command::new(CRUST).args(["dump", "-t", &pid, "-D", dir, "--external", "pipe[x]"]));
    assert!(!ok);
    assert!(
        msg.contains("--external pipe[x]: expected pipe[INO]"),
        "{msg}"
    );
    let _ = v.kill();
    let _ = v.wait();
}

/// A victim with its stdin and stdout on /dev/null, so no pipe leads outside; `setup` runs
/// and the victim sleeps.
fn quiet_victim(setup: &str, ready: &std::path::Path) -> Child {
    let script = format!(
        "import os, time\nos.closerange(3, 1 << 16)\n{setup}\nopen({:?}, 'w').close()\ntime.sleep(1000)\n",
        ready.to_str().unwrap()
    );
    let c = Command::new("python3")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..500 {
        if ready.exists() {
            return c;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("victim not ready");
}

#[test]
fn file_changed_since_dump_fails_restore_unless_skipped() {
    subreaper();
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("data");
    std::fs::write(&file, b"0123456789").unwrap();
    let img = d.path().join("img");
    let mut v = quiet_victim(
        &format!("f = open({:?}, 'rb'); f.read(3)", file.to_str().unwrap()),
        &d.path().join("ready"),
    );
    let pid = v.id();
    let (ok, msg) = run(Command::new(CRUST).args([
        "dump",
        "-t",
        &pid.to_string(),
        "-D",
        img.to_str().unwrap(),
    ]));
    assert!(ok, "{msg}");
    v.wait().unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .unwrap()
        .write_all(b"more")
        .unwrap();
    refused_then_restored_unchecked(
        &img,
        pid,
        &format!(
            "{}: changed since dump (size 10 at dump, 14 now",
            file.display()
        ),
    );
    let pos = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/3")).unwrap();
    assert!(
        pos.starts_with("pos:\t3\n") || pos.contains("pos:\t10"),
        "{pos}"
    );
    kill(pid);
}

#[test]
fn ghost_limit_is_enforced_and_can_be_raised() {
    subreaper();
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("big");
    std::fs::write(&file, vec![b'g'; 3 << 20]).unwrap();
    let img = d.path().join("img");
    let mut v = quiet_victim(
        &format!(
            "f = open({:?}, 'rb'); os.unlink({:?})",
            file.to_str().unwrap(),
            file.to_str().unwrap()
        ),
        &d.path().join("ready"),
    );
    let pid = v.id();
    let (ok, msg) = run(Command::new(CRUST).args([
        "dump",
        "-t",
        &pid.to_string(),
        "-D",
        img.to_str().unwrap(),
    ]));
    assert!(!ok);
    assert!(
        msg.contains(&format!(
            "unlinked file {} holds 3145728 bytes, over the ghost limit of 1048576",
            file.display()
        )),
        "{msg}"
    );
    let (ok, msg) = run(Command::new(CRUST).args([
        "dump",
        "-t",
        &pid.to_string(),
        "-D",
        img.to_str().unwrap(),
        "--ghost-limit",
        "4M",
    ]));
    assert!(ok, "{msg}");
    v.wait().unwrap();
    let (ok, msg) = run(Command::new(CRUST).args(["restore", "-D", img.to_str().unwrap(), "-d"]));
    assert!(ok, "{msg}");
    let link = std::fs::read_link(format!("/proc/{pid}/fd/3")).unwrap();
    assert_eq!(
        link.to_string_lossy(),
        format!("{} (deleted)", file.display())
    );
    let back = std::fs::read(format!("/proc/{pid}/fd/3")).unwrap();
    assert!(back.len() == 3 << 20 && back.iter().all(|&b| b == b'g'));
    assert!(!file.exists());
    kill(pid);
}

fn remaps_in(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("link_remap."))
        .collect();
    v.sort();
    v
}

#[test]
fn link_remap_dumps_an_over_limit_tmpfile_and_cleans_up() {
    subreaper();
    let d = tempfile::tempdir().unwrap();
    let work = d.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let img = d.path().join("img");
    let mut v = quiet_victim(
        &format!(
            "f = os.open({:?}, os.O_TMPFILE | os.O_RDWR, 0o600); os.write(f, b'r' * (2 << 20))",
            work.to_str().unwrap()
        ),
        &d.path().join("ready"),
    );
    let pid = v.id();
    let pid_s = pid.to_string();
    let dump = |extra: &[&str], fault: Option<&str>| {
        let mut c = Command::new(CRUST);
        c.args(["dump", "-t", &pid_s, "-D", img.to_str().unwrap()])
            .args(extra);
        if let Some(f) = fault {
            c.env("CRUST_FAULT", f);
        }
        run(&mut c)
    };
    // Over the ghost limit, and not linked back without the option.
    let (ok, msg) = dump(&[], None);
    assert!(!ok && msg.contains("over the ghost limit"), "{msg}");
    assert!(remaps_in(&work).is_empty());
    let (ok, msg) = dump(&["--link-remap"], None);
    assert!(ok, "{msg}");
    v.wait().unwrap();
    assert_eq!(remaps_in(&work), vec!["link_remap.1".to_string()]);
    // The images hold the file's name, not its contents.
    let data_len = std::fs::metadata(img.join("files-data.img"))
        .map(|m| m.len())
        .unwrap_or(0);
    assert!(data_len < 1 << 20, "files-data.img: {data_len} bytes");
    // A failed restore leaves the link; a successful one removes it.
    let (ok, msg) = run(Command::new(CRUST)
        .args(["restore", "-D", img.to_str().unwrap(), "-d"])
        .env("CRUST_FAULT", "restore-after-fork"));
    assert!(!ok, "{msg}");
    assert_eq!(remaps_in(&work), vec!["link_remap.1".to_string()]);
    let (ok, msg) = run(Command::new(CRUST).args(["restore", "-D", img.to_str().unwrap(), "-d"]));
    assert!(ok, "{msg}");
    assert!(remaps_in(&work).is_empty(), "{:?}", remaps_in(&work));
    let link = std::fs::read_link(format!("/proc/{pid}/fd/3")).unwrap();
    let link = link.to_string_lossy();
    assert!(
        link.starts_with(&format!("{}/#", work.display())) && link.ends_with(" (deleted)"),
        "{link}"
    );
    let back = std::fs::read(format!("/proc/{pid}/fd/3")).unwrap();
    assert!(back.len() == 2 << 20 && back.iter().all(|&b| b == b'r'));
    let nlink = std::fs::metadata(format!("/proc/{pid}/fd/3")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::nlink(&nlink), 0);
    assert_eq!(std::fs::read_dir(&work).unwrap().count(), 0);
    kill(pid);
}

/// Whether another open file description can take an exclusive flock on `path` now.
fn flock_free(path: &std::path::Path) -> bool {
    let f = std::fs::File::open(path).unwrap();
    match nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(_) => true,
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => false,
        Err((_, e)) => panic!("flock: {e}"),
    }
}

#[test]
fn locks_are_taken_again_only_with_file_locks_at_restore() {
    subreaper();
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("locked");
    std::fs::write(&file, b"x").unwrap();
    let img = d.path().join("img");
    let mut v = quiet_victim(
        &format!(
            "import fcntl\nf = open({:?}, 'rb'); fcntl.flock(f, fcntl.LOCK_EX)",
            file.to_str().unwrap()
        ),
        &d.path().join("ready"),
    );
    let pid = v.id();
    assert!(!flock_free(&file));
    let (ok, msg) = run(Command::new(CRUST).args([
        "dump",
        "-t",
        &pid.to_string(),
        "-D",
        img.to_str().unwrap(),
        "--file-locks",
    ]));
    assert!(ok, "{msg}");
    v.wait().unwrap();
    assert!(flock_free(&file));
    // Like CRIU: without --file-locks the restore leaves the locks out.
    let (ok, msg) = run(Command::new(CRUST).args(["restore", "-D", img.to_str().unwrap(), "-d"]));
    assert!(ok, "{msg}");
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    assert!(flock_free(&file), "the lock was taken without --file-locks");
    kill(pid);
    let (ok, msg) = run(Command::new(CRUST).args([
        "restore",
        "-D",
        img.to_str().unwrap(),
        "-d",
        "--file-locks",
    ]));
    assert!(ok, "{msg}");
    assert!(
        !flock_free(&file),
        "the lock is not held after restore --file-locks"
    );
    let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/3")).unwrap();
    assert!(info.contains("FLOCK") && info.contains("WRITE"), "{info}");
    kill(pid);
}

#[test]
fn failed_dump_removes_its_remap_links() {
    subreaper();
    let d = tempfile::tempdir().unwrap();
    let (a, b) = (d.path().join("a"), d.path().join("b"));
    std::fs::write(&a, b"still linked as b").unwrap();
    std::fs::hard_link(&a, &b).unwrap();
    let img = d.path().join("img");
    let mut v = quiet_victim(
        &format!(
            "f = open({:?}, 'rb'); os.unlink({:?})",
            a.to_str().unwrap(),
            a.to_str().unwrap()
        ),
        &d.path().join("ready"),
    );
    let pid = v.id();
    let pid_s = pid.to_string();
    let dump = |fault: Option<&str>| {
        let mut c = Command::new(CRUST);
        c.args([
            "dump",
            "-t",
            &pid_s,
            "-D",
            img.to_str().unwrap(),
            "--link-remap",
        ]);
        if let Some(f) = fault {
            c.env("CRUST_FAULT", f);
        }
        run(&mut c)
    };
    for fault in ["dump-after-pages", "dump-before-inventory"] {
        let (ok, msg) = dump(Some(fault));
        assert!(!ok, "{fault}: {msg}");
        assert!(
            remaps_in(d.path()).is_empty(),
            "{fault}: {:?}",
            remaps_in(d.path())
        );
        assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
        assert!(!a.exists());
    }
    let (ok, msg) = dump(None);
    assert!(ok, "{msg}");
    v.wait().unwrap();
    assert_eq!(remaps_in(d.path()), vec!["link_remap.1".to_string()]);
    let (ok, msg) = run(Command::new(CRUST).args(["restore", "-D", img.to_str().unwrap(), "-d"]));
    assert!(ok, "{msg}");
    assert!(remaps_in(d.path()).is_empty(), "{:?}", remaps_in(d.path()));
    assert!(!a.exists());
    let fd = std::fs::metadata(format!("/proc/{pid}/fd/3")).unwrap();
    let kept = std::fs::metadata(&b).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!((fd.dev(), fd.ino()), (kept.dev(), kept.ino()));
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/fd/3")).unwrap(),
        std::path::PathBuf::from(format!("{} (deleted)", a.display()))
    );
    kill(pid);
}

#[test]
fn a_lease_being_broken_is_refused() {
    subreaper();
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("leased");
    std::fs::write(&file, b"x").unwrap();
    let img = d.path().join("img");
    // F_SETLEASE is 1024, F_WRLCK 1; SIGIO, the break notice, is ignored.
    let mut v = quiet_victim(
        &format!(
            "import fcntl, signal\nsignal.signal(signal.SIGIO, signal.SIG_IGN)\n\
             f = os.open({:?}, os.O_RDWR); fcntl.fcntl(f, 1024, 1)",
            file.to_str().unwrap()
        ),
        &d.path().join("ready"),
    );
    let pid = v.id();
    let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/3")).unwrap();
    assert!(info.contains("LEASE  ACTIVE    WRITE"), "{info}");
    // A reader that does not wait starts the break and is refused for now.
    let e = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&file)
        .unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EWOULDBLOCK));
    let (ok, msg) = run(Command::new(CRUST).args([
        "dump",
        "-t",
        &pid.to_string(),
        "-D",
        img.to_str().unwrap(),
        "--file-locks",
    ]));
    assert!(!ok);
    assert!(
        msg.contains(&format!("pid {pid} fd 3")) && msg.contains("lease being broken"),
        "{msg}"
    );
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    let _ = v.kill();
    let _ = v.wait();
}

/// Where the 20-byte GNU build-id of an ELF file starts, found by its note header.
fn build_id_at(elf: &[u8]) -> usize {
    let mut head = Vec::new();
    for w in [4u32, 20, 3] {
        head.extend_from_slice(&w.to_le_bytes());
    }
    head.extend_from_slice(b"GNU\0");
    elf.windows(head.len())
        .position(|w| w == head.as_slice())
        .expect("a GNU build-id note")
        + head.len()
}

#[test]
fn elf_build_id_changed_since_dump_fails_restore_unless_skipped() {
    subreaper();
    let d = tempfile::tempdir().unwrap();
    let exe = d.path().join("sleeper");
    std::fs::copy("/bin/sleep", &exe).unwrap();
    let img = d.path().join("img");
    let mut v = Command::new(&exe)
        .arg("1000")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = v.id();
    // Running the copy: its exe link names it.
    for _ in 0..500 {
        if std::fs::read_link(format!("/proc/{pid}/exe"))
            .ok()
            .as_deref()
            == Some(exe.as_path())
        {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let (ok, msg) = run(Command::new(CRUST).args([
        "dump",
        "-t",
        &pid.to_string(),
        "-D",
        img.to_str().unwrap(),
    ]));
    assert!(ok, "{msg}");
    v.wait().unwrap();

    // The same size and mtime, another build-id.
    let mtime = std::fs::metadata(&exe).unwrap().modified().unwrap();
    let mut bytes = std::fs::read(&exe).unwrap();
    let at = build_id_at(&bytes);
    let was: String = bytes[at..at + 20]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    bytes[at..at + 20].iter_mut().for_each(|b| *b ^= 0xff);
    let now: String = bytes[at..at + 20]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    std::fs::write(&exe, &bytes).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&exe).unwrap();
    f.set_modified(mtime).unwrap();
    drop(f);

    refused_then_restored_unchecked(
        &img,
        pid,
        &format!(
            "{}: changed since dump (build-id changed: was {was}, now {now})",
            exe.display()
        ),
    );
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/exe")).unwrap(),
        exe,
        "restored exe"
    );
    kill(pid);
}

/// A python victim chrooted into `root`, its stdio on /dev/null; ready once it made /ready
/// there.
fn chrooted_victim(root: &std::path::Path) -> Child {
    let script = format!(
        "import os, time\nos.closerange(3, 1 << 16)\nos.chroot({:?})\nos.chdir('/')\n\
         open('/ready', 'w').close()\ntime.sleep(1000)\n",
        root.to_str().unwrap()
    );
    let c = Command::new("python3")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..500 {
        if root.join("ready").exists() {
            std::fs::remove_file(root.join("ready")).unwrap();
            return c;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("victim not ready");
}

#[test]
fn removed_or_covered_root_is_refused_at_dump_naming_pid_and_path() {
    let d = tempfile::tempdir().unwrap();
    let img = d.path().join("img");
    let dump = |pid: u32| {
        run(Command::new(CRUST).args(["dump", "-t", &pid.to_string(), "-D", img.to_str().unwrap()]))
    };

    // Removed while the victim sits in it.
    let root = d.path().join("gone");
    std::fs::create_dir(&root).unwrap();
    let mut v = chrooted_victim(&root);
    let pid = v.id();
    std::fs::remove_dir(&root).unwrap();
    let (ok, msg) = dump(pid);
    assert!(!ok);
    assert!(
        msg.contains(&format!(
            "pid {pid}: root directory {} (deleted) cannot be restored: it was removed",
            root.display()
        )),
        "{msg}"
    );
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    v.kill().unwrap();
    v.wait().unwrap();

    // Its path now leads to a file system mounted over it.
    let root = d.path().join("covered");
    std::fs::create_dir(&root).unwrap();
    let mut v = chrooted_victim(&root);
    let pid = v.id();
    nix::mount::mount(
        Some("tmpfs"),
        &root,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    let (ok, msg) = dump(pid);
    nix::mount::umount(&root).unwrap();
    assert!(!ok);
    assert!(
        msg.contains(&format!(
            "pid {pid}: root directory {} cannot be restored: the path leads to another directory",
            root.display()
        )),
        "{msg}"
    );
    // Uncovered again, it dumps.
    let (ok, msg) = dump(pid);
    assert!(ok, "{msg}");
    v.wait().unwrap();
}
