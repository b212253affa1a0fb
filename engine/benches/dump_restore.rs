//! Dump and restore timings through the `crust` command line, as a user drives it.
//!
//! `cargo bench -p engine --bench dump_restore [-- FILTER]` prints, for each scenario, the
//! median of several runs of `crust dump` and `crust restore -d` (process start included),
//! and the throughput for memory scenarios. Images go to `$CRUST_BENCH_DIR` (default: a
//! temporary directory under /tmp). This machine is noisy: compare medians, not single runs.

use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::{fork, ForkResult, Pid};

mod common;

const CRUST: &str = env!("CARGO_BIN_EXE_crust");
const RUNS: usize = 5;

/// What the victim process does before it waits to be dumped.
#[derive(Clone, Copy)]
enum Victim {
    /// Dirties this many MiB of anonymous memory.
    Memory(usize),
    /// A sleeping process holding almost nothing.
    Small,
    /// A root with this many sleeping children.
    Tree(usize),
    /// A process with this many sleeping threads.
    Threads(usize),
}

fn pause_forever() -> ! {
    loop {
        nix::unistd::pause();
    }
}

/// Forks the victim; returns its pid once it is ready (it writes a byte to a pipe).
fn spawn(v: Victim) -> Pid {
    let (r, w) = nix::unistd::pipe().unwrap();
    // SAFETY: the bench is single-threaded when it forks; the child only allocates and
    // pauses, which is sound in a single-threaded copy.
    match unsafe { fork() }.unwrap() {
        ForkResult::Child => {
            drop(r);
            common::isolate(&[w.as_raw_fd()]);
            match v {
                Victim::Memory(mib) => {
                    let mut mem = vec![0u8; mib << 20];
                    for (i, b) in mem.iter_mut().enumerate().step_by(4096) {
                        *b = (i >> 12) as u8 | 1;
                    }
                    std::hint::black_box(&mem);
                    nix::unistd::write(&w, b"r").unwrap();
                    pause_forever()
                }
                Victim::Small => {
                    nix::unistd::write(&w, b"r").unwrap();
                    pause_forever()
                }
                Victim::Tree(n) => {
                    for _ in 0..n {
                        // SAFETY: the victim is single-threaded; its children only pause.
                        if let ForkResult::Child = unsafe { fork() }.unwrap() {
                            pause_forever()
                        }
                    }
                    nix::unistd::write(&w, b"r").unwrap();
                    pause_forever()
                }
                Victim::Threads(n) => {
                    for _ in 0..n {
                        std::thread::spawn(|| loop {
                            std::thread::sleep(Duration::from_secs(3600))
                        });
                    }
                    std::thread::sleep(Duration::from_millis(50));
                    nix::unistd::write(&w, b"r").unwrap();
                    pause_forever()
                }
            }
        }
        ForkResult::Parent { child } => {
            drop(w);
            let mut b = [0u8; 1];
            nix::unistd::read(&r, &mut b).unwrap();
            child
        }
    }
}

fn run(args: &[&str]) -> Duration {
    let t = Instant::now();
    let out = Command::new(CRUST).args(args).output().unwrap();
    let d = t.elapsed();
    assert!(
        out.status.success(),
        "crust {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    d
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Kills the tree rooted at `pid` (a child of ours, or re-parented to us) and reaps it.
fn kill_tree(pid: Pid) {
    let _ = Command::new("pkill")
        .args(["-KILL", "-P", &pid.to_string()])
        .status();
    let _ = kill(pid, Signal::SIGKILL);
    let _ = waitpid(pid, None);
    while waitpid(
        Pid::from_raw(-1),
        Some(nix::sys::wait::WaitPidFlag::WNOHANG),
    )
    .is_ok_and(|s| s != nix::sys::wait::WaitStatus::StillAlive)
    {}
}

fn scenario(name: &str, v: Victim, tasks: usize, base: &Path) {
    let mut dumps = Vec::new();
    let mut restores = Vec::new();
    for i in 0..RUNS {
        let dir = base.join(format!("{name}-{i}"));
        let _ = std::fs::remove_dir_all(&dir);
        let pid = spawn(v);
        let d = dir.to_str().unwrap();
        dumps.push(run(&["dump", "-t", &pid.to_string(), "-D", d]));
        // The dumped tree was killed: reap all of it (its orphans come to us, a subreaper).
        while waitpid(Pid::from_raw(-1), None).is_ok() {}
        restores.push(run(&["restore", "-D", d, "-d"]));
        kill_tree(pid);
        let _ = std::fs::remove_dir_all(&dir);
    }
    let (d, r) = (median(dumps), median(restores));
    let per = |x: Duration| x.as_secs_f64() * 1000.0 / tasks as f64;
    let mut line = format!(
        "{name:<22} dump {:>8.1} ms   restore {:>8.1} ms",
        d.as_secs_f64() * 1000.0,
        r.as_secs_f64() * 1000.0
    );
    if let Victim::Memory(mib) = v {
        let mb = (mib << 20) as f64 / 1e6;
        line += &format!(
            "   dump {:>6.0} MB/s   restore {:>6.0} MB/s",
            mb / d.as_secs_f64(),
            mb / r.as_secs_f64()
        );
    }
    if tasks > 1 {
        line += &format!(
            "   per task: dump {:.2} ms, restore {:.2} ms",
            per(d),
            per(r)
        );
    }
    println!("{line}");
}

fn main() {
    nix::sys::prctl::set_child_subreaper(true).unwrap();
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let base = match std::env::var_os("CRUST_BENCH_DIR") {
        Some(d) => std::path::PathBuf::from(d),
        None => tempfile::tempdir().unwrap().keep(),
    };
    std::fs::create_dir_all(&base).unwrap();
    println!("images in {} (median of {RUNS} runs)", base.display());
    let all: &[(&str, Victim, usize)] = &[
        ("small", Victim::Small, 1),
        ("memory-1GiB", Victim::Memory(1024), 1),
        ("tree-10", Victim::Tree(10), 11),
        ("tree-100", Victim::Tree(100), 101),
        ("tree-1000", Victim::Tree(1000), 1001),
        ("threads-100", Victim::Threads(100), 1),
    ];
    for &(name, v, tasks) in all {
        if filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str())) {
            scenario(name, v, tasks, &base);
        }
    }
    let _ = std::fs::remove_dir_all(&base);
}
