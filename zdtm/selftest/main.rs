//! A zdtm protocol program that misbehaves on demand, for the harness's own
//! tests: every way a test can go wrong must come out of the harness as a
//! failure at the right step.
//!
//! `zdtm-selftest --pidfile=P --outfile=O [--mode=M] [--children=N] [--delay-ms=T]`
//!
//! Modes:
//! - `pass` (default): ready, wait for SIGTERM, write `PASS`, exit 0.
//! - `fail`: like pass but writes `FAIL: asked to fail` and exits 1.
//! - `no-pidfile`: never gets ready (sleeps until killed).
//! - `die-early`: prints a complaint to stderr and exits 3 before getting ready.
//! - `ignore-term`: ready, then never reacts to SIGTERM.
//! - `wrong-exit`: writes `PASS` but exits 2.
//! - `pidfile-lie`: writes a pid that is not its own.
//! - `no-outfile`: exits 0 on SIGTERM without writing the outfile.
//! - `sleep`: used for children: sleeps until killed.
//!
//! `--chatter` adds a thread printing to stdout and stderr every few milliseconds.
//!
//! SIGTERM and SIGUSR1 are blocked and SIGTERM is read from a signalfd, so no
//! signal handler (and no unsafe code) is needed. A pending SIGUSR1 is visible
//! in `/proc/PID/status`; harness tests use it to perturb the state.
#![deny(unsafe_code)]

use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::SignalFd;
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn main() {
    let mut pidfile = None;
    let mut outfile = None;
    let mut mode = String::from("pass");
    let mut children = 0usize;
    let mut delay = 0u64;
    let mut chatter = false;
    for a in std::env::args().skip(1) {
        if let Some(v) = a.strip_prefix("--pidfile=") {
            pidfile = Some(v.to_string());
        } else if let Some(v) = a.strip_prefix("--outfile=") {
            outfile = Some(v.to_string());
        } else if let Some(v) = a.strip_prefix("--mode=") {
            mode = v.to_string();
        } else if let Some(v) = a.strip_prefix("--children=") {
            children = v.parse().expect("--children=N");
        } else if a == "--chatter" {
            chatter = true;
        } else if let Some(v) = a.strip_prefix("--delay-ms=") {
            delay = v.parse().expect("--delay-ms=T");
        } else {
            eprintln!("zdtm-selftest: unknown argument {a:?}");
            std::process::exit(2);
        }
    }
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGUSR1);
    set.thread_block().expect("block signals");

    if mode == "sleep" {
        // Tell the parent we are set up (it waits for this before getting ready).
        use std::io::Write;
        let _ = std::io::stdout().write_all(b"r");
        let _ = std::io::stdout().flush();
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    let (Some(pidfile), Some(outfile)) = (pidfile, outfile) else {
        eprintln!("zdtm-selftest: --pidfile= and --outfile= are required");
        std::process::exit(2);
    };
    if mode == "die-early" {
        eprintln!("zdtm-selftest: dying before ready, as asked");
        std::process::exit(3);
    }
    // A signalfd, unlike sigwait/sigsuspend, leaves the blocked mask alone while
    // waiting, so the mask the harness sees never depends on where we are.
    let mut term = SigSet::empty();
    term.add(Signal::SIGTERM);
    let sfd = SignalFd::new(&term).expect("signalfd");
    // Children and threads must be fully set up before the pidfile says "ready":
    // the harness inspects the tree right then.
    let kids: Vec<Child> = (0..children)
        .map(|_| {
            let mut kid = Command::new(std::env::current_exe().expect("own path"))
                .arg("--mode=sleep")
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn child");
            let mut b = [0u8; 1];
            kid.stdout
                .take()
                .expect("child stdout")
                .read_exact(&mut b)
                .expect("child ready");
            kid
        })
        .collect();
    if chatter {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || loop {
            println!("chatter on stdout");
            eprintln!("chatter on stderr");
            let _ = tx.send(());
            std::thread::sleep(Duration::from_millis(2));
        });
        rx.recv().expect("chatter thread started");
    }
    std::thread::sleep(Duration::from_millis(delay));
    if mode != "no-pidfile" {
        let mut pid = std::process::id();
        if mode == "pidfile-lie" {
            pid += 100_000;
        }
        let tmp = format!("{pidfile}.tmp");
        std::fs::write(&tmp, format!("{pid}\n")).expect("write pidfile");
        std::fs::rename(&tmp, &pidfile).expect("rename pidfile");
    }
    if mode == "no-pidfile" || mode == "ignore-term" {
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    while sfd.read_signal().expect("read signalfd").is_none() {}
    for mut k in kids {
        let _ = k.kill();
        let _ = k.wait();
    }
    let (text, code) = match mode.as_str() {
        "pass" => ("PASS\n", 0),
        "fail" => ("FAIL: asked to fail\n", 1),
        "wrong-exit" => ("PASS\n", 2),
        "no-outfile" => std::process::exit(0),
        other => {
            eprintln!("zdtm-selftest: unknown mode {other:?}");
            ("FAIL: unknown mode\n", 1)
        }
    };
    std::fs::write(&outfile, text).expect("write outfile");
    std::process::exit(code);
}
