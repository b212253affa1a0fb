//! Memory throughput and incremental-dump downtime through the `crust` command line.
//!
//! `cargo bench -p engine --bench mem [-- FILTER]` (as root) prints:
//! - `full-1GiB`, `full-8GiB`: dump and restore of one process with that much dirtied
//!   anonymous memory, in MB/s of memory (median of runs; process start included);
//! - `incremental-1GiB`: a plain dump of 1 GiB against the final dump after a pre-dump with
//!   5% of the pages dirtied since: the time each command takes and the time each kept the
//!   process frozen (its log's "tree frozen for"). The final dump is what stops a migrated
//!   service; the target is a tenth of the plain dump's downtime.
//!
//! Images go to `$CRUST_BENCH_DIR` (default: a temporary directory under /tmp). The machine
//! is noisy: compare medians taken close together.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

mod common;

const CRUST: &str = env!("CARGO_BIN_EXE_crust");

/// A victim: `mib` MiB of dirtied anonymous memory; on a byte from its command pipe it dirties
/// one page in twenty (5%) and answers with a byte.
struct Victim {
    pid: Pid,
    cmd: OwnedFd,
    ack: OwnedFd,
}

fn spawn(mib: usize) -> Victim {
    let (ready_r, ready_w) = nix::unistd::pipe().unwrap();
    let (cmd_r, cmd_w) = nix::unistd::pipe().unwrap();
    // SAFETY: the bench is single-threaded when it forks; the child only allocates, touches
    // its memory and blocks in read.
    match unsafe { fork() }.unwrap() {
        ForkResult::Child => {
            drop(ready_r);
            drop(cmd_w);
            common::isolate(&[ready_w.as_raw_fd(), cmd_r.as_raw_fd()]);
            let mut mem = vec![0u8; mib << 20];
            for (i, b) in mem.iter_mut().enumerate().step_by(4096) {
                *b = (i >> 12) as u8 | 1;
            }
            nix::unistd::write(&ready_w, b"r").unwrap();
            let mut round = 1u8;
            loop {
                let mut b = [0u8; 1];
                match nix::unistd::read(&cmd_r, &mut b) {
                    Ok(1) => {
                        round = round.wrapping_add(1);
                        for b in mem.iter_mut().step_by(20 * 4096) {
                            *b = round;
                        }
                        std::hint::black_box(&mem);
                        nix::unistd::write(&ready_w, b"d").unwrap();
                    }
                    Ok(_) => std::process::exit(0),
                    Err(_) => {}
                }
            }
        }
        ForkResult::Parent { child } => {
            drop(ready_w);
            drop(cmd_r);
            let mut b = [0u8; 1];
            nix::unistd::read(&ready_r, &mut b).unwrap();
            Victim {
                pid: child,
                cmd: cmd_w,
                ack: ready_r,
            }
        }
    }
}

impl Victim {
    fn dirty(&self) {
        nix::unistd::write(&self.cmd, b"d").unwrap();
        let mut b = [0u8; 1];
        nix::unistd::read(&self.ack, &mut b).unwrap();
    }

    /// Pipes to the bench lead out of the tree: the dump is told they are external.
    fn external(&self) -> Vec<String> {
        let mut out = Vec::new();
        for fd in [self.cmd.as_raw_fd(), self.ack.as_raw_fd()] {
            let l = std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap();
            let ino = l.to_string_lossy().trim_start_matches("pipe:[").to_string();
            out.push("--external".into());
            out.push(format!("pipe[{ino}"));
        }
        out
    }
}

fn run(args: &[String]) -> Duration {
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

fn args(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn reap_all() {
    while waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG))
        .is_ok_and(|s| s != WaitStatus::StillAlive)
    {}
}

fn kill_and_reap(pid: Pid) {
    let _ = kill(pid, Signal::SIGKILL);
    let _ = waitpid(pid, None);
    reap_all();
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Dump, then restore, `runs` times.
fn full(name: &str, mib: usize, runs: usize, base: &Path) {
    let (mut dumps, mut restores) = (Vec::new(), Vec::new());
    for i in 0..runs {
        let dir = base.join(format!("{name}-{i}"));
        let _ = std::fs::remove_dir_all(&dir);
        let v = spawn(mib);
        let d = dir.to_str().unwrap();
        let mut a = args(&["dump", "-t", &v.pid.to_string(), "-D", d]);
        a.extend(v.external());
        dumps.push(run(&a));
        let _ = waitpid(v.pid, None);
        let mut r = args(&["restore", "-D", d, "-d"]);
        // The restored process's command pipes stand in for the bench's: /dev/null.
        r.extend(inherit(&dir));
        restores.push(run(&r));
        kill_and_reap(v.pid);
        drop(v);
        let _ = std::fs::remove_dir_all(&dir);
    }
    let (d, r) = (median(dumps), median(restores));
    let mb = (mib << 20) as f64 / 1e6;
    println!(
        "{name:<18} dump {:>8.1} ms ({:>5.0} MB/s)   restore {:>8.1} ms ({:>5.0} MB/s)   [{runs} run(s)]",
        ms(d),
        mb / d.as_secs_f64(),
        ms(r),
        mb / r.as_secs_f64()
    );
}

/// `--inherit-fd` for every external pipe of the images in `dir`, on crust's stdin.
fn inherit(dir: &Path) -> Vec<String> {
    let images = images::ImageDir::open(dir).unwrap();
    let files: Vec<images::pb::FileEntry> = images
        .read(images::ImageKind::Files, None)
        .unwrap_or_default();
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

/// The "tree frozen for X ms" a dump or pre-dump logs (NaN if it logged none).
fn frozen(log: &Path) -> f64 {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.find("tree frozen for ")
        .and_then(|at| text[at + 16..].split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

fn median_ms(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Plain dump against pre-dump + final dump with 5% dirtied: the time each command takes,
/// and the time each kept the tree frozen (the downtime of a service being migrated).
fn incremental(mib: usize, runs: usize, base: &Path) {
    let mut plain = Vec::new();
    let mut fin = Vec::new();
    let mut pre = Vec::new();
    // Frozen times (ms) of the plain dump, the pre-dump and the final dump.
    let (mut plain_held, mut pre_held, mut fin_held) = (Vec::new(), Vec::new(), Vec::new());
    let logged = |dir: &Path, log: &str| args(&["-D", dir.to_str().unwrap(), "-v4", "-o", log]);
    for i in 0..runs {
        let v = spawn(mib);
        let dir = base.join(format!("plain-{i}"));
        let mut a = args(&["dump", "-t", &v.pid.to_string()]);
        a.extend(logged(&dir, "dump.log"));
        a.extend(v.external());
        plain.push(run(&a));
        plain_held.push(frozen(&dir.join("dump.log")));
        kill_and_reap(v.pid);
        // Its pipes go before the next victim is forked (it would inherit them).
        drop(v);
        let _ = std::fs::remove_dir_all(&dir);

        let v = spawn(mib);
        let p = base.join(format!("pre-{i}"));
        let d = base.join(format!("final-{i}"));
        let mut a = args(&["pre-dump", "-t", &v.pid.to_string()]);
        a.extend(logged(&p, "pre.log"));
        pre.push(run(&a));
        pre_held.push(frozen(&p.join("pre.log")));
        v.dirty();
        let mut a = args(&["dump", "-t", &v.pid.to_string()]);
        a.extend(logged(&d, "dump.log"));
        a.extend(args(&["--prev-images-dir", &format!("../pre-{i}")]));
        a.extend(v.external());
        fin.push(run(&a));
        fin_held.push(frozen(&d.join("dump.log")));
        kill_and_reap(v.pid);
        drop(v);
        let _ = std::fs::remove_dir_all(&p);
        let _ = std::fs::remove_dir_all(&d);
    }
    let (plain, fin, pre) = (median(plain), median(fin), median(pre));
    let (plain_held, pre_held, fin_held) = (
        median_ms(plain_held),
        median_ms(pre_held),
        median_ms(fin_held),
    );
    println!(
        "incremental-{}GiB   plain dump {:>6.1} ms (frozen {:.1} ms)   pre-dump {:>6.1} ms (frozen {:.1} ms)   final dump after 5% dirtied {:>5.1} ms (frozen {:.1} ms)   [{runs} runs]",
        mib >> 10,
        ms(plain),
        plain_held,
        ms(pre),
        pre_held,
        ms(fin),
        fin_held,
    );
    println!(
        "incremental-{}GiB   downtime (time frozen) {:.1}x shorter; command time {:.1}x shorter",
        mib >> 10,
        plain_held / fin_held,
        plain.as_secs_f64() / fin.as_secs_f64()
    );
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        println!("mem bench: skipped (needs root)");
        return;
    }
    nix::sys::prctl::set_child_subreaper(true).unwrap();
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wanted = |n: &str| filter.is_empty() || filter.iter().any(|f| n.contains(f.as_str()));
    let base = match std::env::var_os("CRUST_BENCH_DIR") {
        Some(d) => std::path::PathBuf::from(d),
        None => tempfile::tempdir().unwrap().keep(),
    };
    std::fs::create_dir_all(&base).unwrap();
    println!("images in {}", base.display());
    if wanted("full-1GiB") {
        full("full-1GiB", 1024, 5, &base);
    }
    if wanted("full-8GiB") {
        full("full-8GiB", 8192, 1, &base);
    }
    if wanted("incremental-1GiB") {
        incremental(1024, 5, &base);
    }
    let _ = std::fs::remove_dir_all(&base);
}
