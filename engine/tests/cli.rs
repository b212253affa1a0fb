//! The `crust` command line against real processes: round trips, and the promises made when
//! things go wrong (a failed dump leaves the target running untouched, a failed restore leaves
//! nothing behind and the images intact, every error is one line naming what and where).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const CRUST: &str = env!("CARGO_BIN_EXE_crust");

/// Restored tasks are re-parented to us when `crust restore -d` exits, so we can reap them.
fn subreaper() {
    nix::sys::prctl::set_child_subreaper(true).unwrap();
}

/// A python victim: runs `setup`, then prints "ready" and blocks reading stdin; each line read
/// is evaluated and its result printed, so a test can ask the victim about its own state.
fn victim(setup: &str) -> Child {
    let script = format!(
        "import os, sys, socket, signal\nos.closerange(3, 1 << 16)\n{setup}\nprint('ready', flush=True)\n\
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
    let mut out = c.stdout.take().unwrap();
    assert_eq!(read_line(&mut out), "ready");
    c.stdout = Some(out);
    c
}

fn read_line(r: &mut impl std::io::Read) -> String {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while r.read(&mut b).unwrap() == 1 && b[0] != b'\n' {
        line.push(b[0]);
    }
    String::from_utf8(line).unwrap()
}

/// `--external pipe[INO]` for each pipe the victim `pid` shares with this test (its stdin and
/// stdout): without them crust refuses pipes leading out of the dumped tree.
fn external_pipes(pid: &str) -> Vec<String> {
    let mut out = Vec::new();
    for fd in 0..3 {
        if let Ok(t) = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")) {
            let t = t.to_string_lossy().into_owned();
            if let Some(ino) = t.strip_prefix("pipe:[") {
                out.push("--external".to_string());
                out.push(format!("pipe[{ino}"));
            }
        }
    }
    out
}

/// `--inherit-fd fd[0]:pipe:[INO]` for each pipe dumped as external in `dir`: the restored
/// task gets crust's stdin (here /dev/null) in place of the test's pipes, which are gone.
fn inherit_pipes(dir: &str) -> Vec<String> {
    let Ok(d) = images::ImageDir::open(Path::new(dir)) else {
        return Vec::new();
    };
    let files: Vec<images::pb::FileEntry> =
        d.read(images::ImageKind::Files, None).unwrap_or_default();
    let mut inos: Vec<u64> = files
        .iter()
        .filter_map(|f| match &f.kind {
            Some(images::pb::file_entry::Kind::Pipe(p)) if p.external => Some(p.pipe_ino),
            _ => None,
        })
        .collect();
    inos.sort_unstable();
    inos.dedup();
    inos.iter()
        .flat_map(|i| ["--inherit-fd".to_string(), format!("fd[0]:pipe:[{i}]")])
        .collect()
}

fn crust(args: &[&str], fault: Option<&str>) -> (bool, String) {
    let mut cmd = Command::new(CRUST);
    cmd.args(args);
    let after = |flag: &str| {
        args.iter()
            .position(|a| *a == flag)
            .and_then(|i| args.get(i + 1))
    };
    match (args.first(), after("-t"), after("-D")) {
        (Some(&"dump"), Some(pid), _) => {
            cmd.args(external_pipes(pid));
        }
        (Some(&"restore"), _, Some(dir)) => {
            cmd.args(inherit_pipes(dir));
        }
        _ => {}
    }
    if let Some(f) = fault {
        cmd.env("CRUST_FAULT", f);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    )
}

fn state(pid: u32) -> Option<(char, String)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let st = status
        .lines()
        .find(|l| l.starts_with("State:"))?
        .split_whitespace()
        .nth(1)?
        .chars()
        .next()?;
    let tracer = status
        .lines()
        .find(|l| l.starts_with("TracerPid:"))?
        .split_whitespace()
        .nth(1)?
        .to_string();
    Some((st, tracer))
}

/// The victim is alive, not traced, and still answers.
fn assert_untouched(c: &mut Child) {
    let pid = c.id();
    let (st, tracer) = state(pid).expect("victim is gone");
    assert_eq!(tracer, "0", "victim {pid} still traced");
    assert_ne!(st, 'Z', "victim {pid} is a zombie");
    use std::io::Write;
    c.stdin.as_mut().unwrap().write_all(b"1+1\n").unwrap();
    assert_eq!(read_line(c.stdout.as_mut().unwrap()), "2");
}

fn one_line(msg: &str) {
    assert_eq!(msg.lines().count(), 1, "not one line: {msg:?}");
    assert!(!msg.contains("panicked"), "{msg}");
}

fn tmpdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "img" || e == "tmp"))
        .collect();
    v.sort();
    v
}

fn kill(c: &mut Child) {
    let _ = c.kill();
    let _ = c.wait();
}

#[test]
fn dump_of_a_missing_pid_names_it() {
    let d = tmpdir();
    let (ok, msg) = crust(
        &["dump", "-t", "2147480000", "-D", d.path().to_str().unwrap()],
        None,
    );
    assert!(!ok);
    one_line(&msg);
    assert!(msg.contains("pid 2147480000: no such process"), "{msg}");
}

#[test]
fn unsupported_fd_is_named_and_target_keeps_running() {
    let mut v = victim("s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\nfd = s.fileno()");
    let d = tmpdir();
    let pid = v.id().to_string();
    let (ok, msg) = crust(
        &["dump", "-t", &pid, "-D", d.path().to_str().unwrap()],
        None,
    );
    assert!(!ok);
    one_line(&msg);
    assert!(msg.contains(&format!("pid {pid} fd ")), "{msg}");
    assert!(msg.contains("socket:["), "{msg}");
    assert!(msg.contains("not supported"), "{msg}");
    assert_untouched(&mut v);
    assert!(files_in(d.path()).is_empty(), "{:?}", files_in(d.path()));
    kill(&mut v);
}

#[test]
fn failed_dump_at_every_fault_point_leaves_target_running() {
    for point in [
        "dump-after-seize",
        "dump-after-pages",
        "dump-before-inventory",
    ] {
        let mut v = victim("x = bytearray(b'crust' * 100000)");
        let d = tmpdir();
        let pid = v.id().to_string();
        let (ok, msg) = crust(
            &["dump", "-t", &pid, "-D", d.path().to_str().unwrap()],
            Some(point),
        );
        assert!(!ok, "{point}: dump succeeded");
        one_line(&msg);
        assert!(msg.contains(point), "{msg}");
        assert_untouched(&mut v);
        assert!(
            files_in(d.path()).is_empty(),
            "{point}: left {:?}",
            files_in(d.path())
        );
        kill(&mut v);
    }
}

/// Dumps a victim (killing it), reaps it, and returns the image dir and its pid.
fn dumped(setup: &str) -> (tempfile::TempDir, u32) {
    let mut v = victim(setup);
    let d = tmpdir();
    let pid = v.id();
    let (ok, msg) = crust(
        &[
            "dump",
            "-t",
            &pid.to_string(),
            "-D",
            d.path().to_str().unwrap(),
        ],
        None,
    );
    assert!(ok, "{msg}");
    v.wait().unwrap();
    (d, pid)
}

fn reap(pid: u32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid as i32), None);
}

fn wait_gone(pid: u32) {
    for _ in 0..200 {
        if state(pid).is_none() {
            return;
        }
        let _ = nix::sys::wait::waitpid(
            nix::unistd::Pid::from_raw(pid as i32),
            Some(nix::sys::wait::WaitPidFlag::WNOHANG),
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("pid {pid} still exists: {:?}", state(pid));
}

fn digest(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    files_in(dir)
        .into_iter()
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect()
}

#[test]
fn failed_restore_leaves_nothing_and_images_intact() {
    subreaper();
    for point in [
        "restore-after-fork",
        "restore-after-mm",
        "restore-before-release",
    ] {
        let (d, pid) = dumped("x = 42");
        let before = digest(d.path());
        let (ok, msg) = crust(
            &["restore", "-D", d.path().to_str().unwrap(), "-d"],
            Some(point),
        );
        assert!(!ok, "{point}: restore succeeded");
        one_line(&msg);
        wait_gone(pid);
        assert!(digest(d.path()) == before, "{point}: images changed");
        // And the same images still restore.
        let (ok, msg) = crust(&["restore", "-D", d.path().to_str().unwrap(), "-d"], None);
        assert!(ok, "{point}: {msg}");
        assert!(state(pid).is_some());
        reap(pid);
    }
}

#[test]
fn restore_refuses_missing_incomplete_and_corrupt_dirs() {
    let d = tmpdir();
    let missing = d.path().join("nope");
    let (ok, msg) = crust(&["restore", "-D", missing.to_str().unwrap(), "-d"], None);
    assert!(!ok);
    one_line(&msg);
    assert!(msg.contains("nope"), "{msg}");

    let (ok, msg) = crust(&["restore", "-D", d.path().to_str().unwrap(), "-d"], None);
    assert!(!ok);
    one_line(&msg);
    assert!(msg.contains("inventory.img"), "{msg}");

    let (img, pid) = dumped("x = 1");
    let core = img.path().join("core.img");
    let len = std::fs::metadata(&core).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&core).unwrap();
    f.set_len(len - 7).unwrap();
    let (ok, msg) = crust(&["restore", "-D", img.path().to_str().unwrap(), "-d"], None);
    assert!(!ok);
    one_line(&msg);
    assert!(msg.contains("core.img"), "{msg}");
    assert!(msg.contains("offset"), "{msg}");
    assert!(state(pid).is_none(), "a half-restored task exists");

    let (img, pid) = dumped("x = 1");
    let pm = img.path().join("pagemap.img");
    let mut bytes = std::fs::read(&pm).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0x40;
    std::fs::write(&pm, &bytes).unwrap();
    let (ok, msg) = crust(&["restore", "-D", img.path().to_str().unwrap(), "-d"], None);
    assert!(!ok);
    one_line(&msg);
    assert!(msg.contains("pagemap"), "{msg}");
    assert!(state(pid).is_none(), "a half-restored task exists");
}

#[test]
fn restore_refuses_a_taken_pid() {
    subreaper();
    let (d, pid) = dumped("x = 1");
    let (ok, msg) = crust(&["restore", "-D", d.path().to_str().unwrap(), "-d"], None);
    assert!(ok, "{msg}");
    let (ok, msg) = crust(&["restore", "-D", d.path().to_str().unwrap(), "-d"], None);
    assert!(!ok);
    one_line(&msg);
    assert!(msg.contains(&format!("pid {pid}: already in use")), "{msg}");
    reap(pid);
}

#[test]
fn round_trip_keeps_python_state_and_restore_waits_for_exit() {
    subreaper();
    let (d, pid) = dumped("data = list(range(100000))\nf = open('/etc/hostname')\nf.read(1)");
    // Without -d crust waits for the task and exits with its status.
    let img = d.path().to_str().unwrap().to_string();
    let handle = std::thread::spawn(move || {
        Command::new(CRUST)
            .args(["restore", "-D", &img])
            .args(inherit_pipes(&img))
            .stdin(Stdio::null())
            .status()
            .unwrap()
    });
    for _ in 0..400 {
        if state(pid).is_some_and(|(s, t)| s != 'Z' && t == "0") {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // The restored task reads stdin: its pipe to us was dumped as external and restored from
    // crust's stdin (--inherit-fd), /dev/null, so the task sees EOF and exits 0.
    let st = handle.join().unwrap();
    assert_eq!(st.code(), Some(0));
}

#[test]
fn check_reports_features() {
    let out = Command::new(CRUST).arg("check").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("pagemap_scan: ok"), "{text}");
    let st = Command::new(CRUST)
        .args(["check", "--feature", "no_such_thing"])
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(2));
}

#[test]
fn shell_job_moves_to_crusts_terminal() {
    // A `cat` on one pseudo-terminal is dumped (refused without --shell-job), then restored
    // by a crust running on another terminal, where it must echo what it reads.
    let script = format!(
        r#"
import os, pty, subprocess, time, ctypes
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)
C = {CRUST:?}
m, s = pty.openpty()
p = subprocess.Popen(["cat"], stdin=s, stdout=s, stderr=s, start_new_session=True)
time.sleep(0.2)
d = {dir:?}
r = subprocess.run([C, "dump", "-t", str(p.pid), "-D", d], capture_output=True, text=True)
assert r.returncode == 1 and "use --shell-job" in r.stderr, r.stderr
r = subprocess.run([C, "dump", "-t", str(p.pid), "-D", d, "--shell-job"], capture_output=True, text=True)
assert r.returncode == 0, r.stderr
p.wait()
m2, s2 = pty.openpty()
r = subprocess.run([C, "restore", "-D", d, "-d", "--shell-job"], stdin=s2, stdout=s2, stderr=s2)
assert r.returncode == 0
assert os.readlink(f"/proc/{{p.pid}}/fd/0") == os.ttyname(s2)
os.write(m2, b"crust\n")
time.sleep(0.3)
out = os.read(m2, 100)
os.kill(p.pid, 9)
assert out.count(b"crust") == 2, out
print("ok")
"#,
        dir = tmpdir().keep().join("img").to_str().unwrap()
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn shell_job_in_a_shells_session_joins_crusts_session_and_terminal() {
    // A "shell" leads a session on one pseudo-terminal and runs `cat` as a job: its own
    // group, in the shell's session, in the terminal's foreground. The job is dumped with
    // --shell-job and restored by a crust that a second "shell" runs on a new terminal: the
    // job must come back in that shell's session, leading its own group, with the new
    // terminal as its controlling one and its group in the foreground, and echo what it reads.
    let script = format!(
        r#"
import os, pty, subprocess, time, ctypes, fcntl
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)
C = {CRUST:?}
d = {dir:?}
PROLOGUE = """
import os, fcntl, termios, signal, time, subprocess, sys
fcntl.ioctl(0, termios.TIOCSCTTY, 0)
signal.signal(signal.SIGTTOU, signal.SIG_IGN)
"""
SHELL = PROLOGUE + """
job = os.fork()
if job == 0:
    os.setpgid(0, 0)
    os.execvp("cat", ["cat"])
os.setpgid(job, job)
os.tcsetpgrp(0, job)
os.waitpid(job, 0)
while True:
    time.sleep(100)
"""
RESTORER = PROLOGUE + f"""
r = subprocess.run([{{C!r}}, "restore", "-D", {{d!r}}, "-d", "--shell-job"])
os.write(int(sys.argv[1]), b"%d" % r.returncode)
while True:
    time.sleep(100)
"""

def ids(pid):
    f = open(f"/proc/{{pid}}/stat").read().rsplit(")", 1)[1].split()
    return dict(sid=int(f[3]), pgid=int(f[2]), tty=int(f[4]), tpgid=int(f[5]))

def drain(m):
    fcntl.fcntl(m, fcntl.F_SETFL, os.O_NONBLOCK)
    out = b""
    while True:
        try:
            b = os.read(m, 4096)
        except (BlockingIOError, OSError):
            return out
        if not b:
            return out
        out += b

m, s = pty.openpty()
sh = subprocess.Popen(["python3", "-c", SHELL], stdin=s, stdout=s, stderr=s, start_new_session=True)
job = None
for _ in range(100):
    kids = open(f"/proc/{{sh.pid}}/task/{{sh.pid}}/children").read().split()
    try:
        if kids and os.readlink(f"/proc/{{kids[0]}}/exe").endswith("cat") and ids(int(kids[0]))["tpgid"] == int(kids[0]):
            job = int(kids[0])
            break
    except OSError:
        pass
    time.sleep(0.05)
assert job, "the shell did not start its job"
before = ids(job)
assert before["sid"] == sh.pid and before["pgid"] == job, before
r = subprocess.run([C, "dump", "-t", str(job), "-D", d, "--shell-job"], capture_output=True, text=True)
assert r.returncode == 0, r.stderr
for _ in range(100):
    if open(f"/proc/{{sh.pid}}/task/{{sh.pid}}/children").read().split() == []:
        break
    time.sleep(0.05)

m2, s2 = pty.openpty()
rr, rw = os.pipe()
sh2 = subprocess.Popen(["python3", "-c", RESTORER, str(rw)], stdin=s2, stdout=s2, stderr=s2, start_new_session=True, pass_fds=[rw])
os.close(rw)
code = os.read(rr, 10)
assert code == b"0", (code, drain(m2))
after = ids(job)
tty2 = os.stat(os.ttyname(s2)).st_rdev
want = dict(sid=sh2.pid, pgid=job, tty=tty2, tpgid=job)
assert after == want, (after, want)
assert os.readlink(f"/proc/{{job}}/fd/0") == os.ttyname(s2)
drain(m2)
os.write(m2, b"crust\n")
time.sleep(0.3)
out = drain(m2)
for p in (job, sh.pid, sh2.pid):
    os.kill(p, 9)
assert out.count(b"crust") == 2, out
print("ok")
"#,
        dir = tmpdir().keep().join("img").to_str().unwrap()
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn sysv_shm_of_the_host_ipc_namespace_is_refused_naming_pid_address_and_shmid() {
    // IPC_PRIVATE, IPC_CREAT | 0600; removed at once (IPC_RMID), so it goes with the victim.
    let mut v = victim(
        "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n\
         libc.shmat.restype = ctypes.c_void_p\n\
         shmid = libc.shmget(0, 8192, 0o1600)\naddr = libc.shmat(shmid, None, 0)\n\
         libc.shmctl(shmid, 0, None)",
    );
    use std::io::Write;
    let mut ask = |what: &str| {
        v.stdin
            .as_mut()
            .unwrap()
            .write_all(format!("{what}\n").as_bytes())
            .unwrap();
        read_line(v.stdout.as_mut().unwrap())
    };
    let shmid = ask("shmid");
    let addr = ask("hex(addr)");
    assert!(shmid.parse::<i32>().is_ok_and(|id| id >= 0), "{shmid}");
    let d = tmpdir();
    let pid = v.id().to_string();
    let (ok, msg) = crust(
        &["dump", "-t", &pid, "-D", d.path().to_str().unwrap()],
        None,
    );
    assert!(!ok);
    one_line(&msg);
    let want = format!(
        "pid {pid}: System V shared memory shmid {shmid} attached at {addr} belongs to an IPC namespace outside the tree"
    );
    assert!(msg.contains(&want), "{msg}\nwanted: {want}");
    assert_untouched(&mut v);
    assert!(files_in(d.path()).is_empty(), "{:?}", files_in(d.path()));
    kill(&mut v);
}
