//! Dump and restore time of a process holding many files: 1000 open regular files and 100
//! pipes filled to capacity (64 KiB each, 6.4 MiB queued). Pipe queues go from the pipe to
//! the image and back with tee/splice, never through crust's memory.
//!
//! `cargo bench -p engine --bench files` (as root). Prints one line per step.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CRUST: &str = env!("CARGO_BIN_EXE_crust");

fn main() {
    if !nix::unistd::geteuid().is_root() {
        println!("files bench: skipped (needs root)");
        return;
    }
    nix::sys::prctl::set_child_subreaper(true).unwrap();
    let work = tempfile::tempdir().unwrap();
    let files_dir = work.path().join("files");
    std::fs::create_dir(&files_dir).unwrap();
    let ready = work.path().join("ready");
    let script = format!(
        r#"
import os, resource, time, fcntl
resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))
keep = []
for i in range(1000):
    p = os.path.join({dir:?}, "f%d" % i)
    with open(p, "wb") as f:
        f.write(b"x" * 100)
    keep.append(os.open(p, os.O_RDWR))
for i in range(100):
    r, w = os.pipe()
    fcntl.fcntl(w, fcntl.F_SETFL, os.O_NONBLOCK)
    try:
        while True:
            os.write(w, b"p" * 4096)
    except BlockingIOError:
        pass
    keep += [r, w]
open({ready:?}, "w").close()
time.sleep(1000)
"#,
        dir = files_dir.to_str().unwrap(),
        ready = ready.to_str().unwrap()
    );
    // Reaped with waitpid below, after crust killed it.
    #[allow(clippy::zombie_processes)]
    let victim = Command::new("python3")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 is needed by this bench");
    let pid = victim.id();
    let t0 = Instant::now();
    while !ready.exists() {
        assert!(t0.elapsed() < Duration::from_secs(60), "victim not ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    let img = work.path().join("img");
    let t = Instant::now();
    let st = Command::new(CRUST)
        .args(["dump", "-t", &pid.to_string(), "-D", img.to_str().unwrap()])
        .status()
        .unwrap();
    let dump = t.elapsed();
    assert!(st.success(), "dump failed");
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid as i32), None);
    let data = std::fs::metadata(img.join(images::FILES_DATA))
        .map(|m| m.len())
        .unwrap_or(0);
    let t = Instant::now();
    let st = Command::new(CRUST)
        .args(["restore", "-D", img.to_str().unwrap(), "-d"])
        .status()
        .unwrap();
    let restore = t.elapsed();
    assert!(st.success(), "restore failed");
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid as i32), None);
    println!(
        "files bench: 1000 files + 100 full pipes ({data} bytes of queues), {fds} fds restored"
    );
    println!("files bench: dump    {:>8.1} ms", dump.as_secs_f64() * 1e3);
    println!(
        "files bench: restore {:>8.1} ms",
        restore.as_secs_f64() * 1e3
    );
}
