//! The `crust` command line on files leading outside the tree and on file validation:
//! pipes shared with a process outside the dumped tree (`--external`, `--inherit-fd`), files
//! changed between dump and restore (`--skip-file-validation`), and the ghost limit.

// Victims are killed by crust and reaped with waitpid, which clippy cannot see.
#![allow(clippy::zombie_processes)]

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
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
    let (ok, msg) = run(Command::new(CRUST).args(["restore", "-D", img.to_str().unwrap(), "-d"]));
    assert!(!ok);
    assert!(
        msg.contains(&format!(
            "{}: changed since dump (size 10 at dump, 14 now",
            file.display()
        )),
        "{msg}"
    );
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    let (ok, msg) = run(Command::new(CRUST).args([
        "restore",
        "-D",
        img.to_str().unwrap(),
        "-d",
        "--skip-file-validation",
    ]));
    assert!(ok, "{msg}");
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
