//! Seize, remote syscalls and release against real victim processes.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use parasite::{RemoteAddr, StopKind, Tid, Tracee};

fn state_of(pid: i32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    after.chars().next().unwrap()
}

fn wait_sleeping(pid: i32) {
    for _ in 0..500 {
        if state_of(pid) == 'S' {
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    panic!("pid {pid} never went to sleep");
}

#[test]
fn remote_getpid_mmap_and_memory() {
    let mut child = Command::new("sleep").arg("100").spawn().unwrap();
    let pid = child.id() as i32;
    wait_sleeping(pid);
    let mut t = Tracee::seize(Tid(pid)).unwrap();
    assert_eq!(t.stop_kind(), StopKind::Interrupted);
    assert_eq!(t.syscall(libc::SYS_getpid, [0; 6]).unwrap(), pid as i64);

    let addr = t
        .syscall_ok(
            libc::SYS_mmap,
            [
                0,
                4096,
                (libc::PROT_READ | libc::PROT_WRITE) as u64,
                (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64,
                u64::MAX,
                0,
            ],
        )
        .unwrap();
    t.write_mem(RemoteAddr(addr), b"crust").unwrap();
    let mut back = [0u8; 5];
    t.read_mem(RemoteAddr(addr), &mut back).unwrap();
    assert_eq!(&back, b"crust");
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    assert!(
        maps.contains(&format!("{addr:x}-")),
        "scratch mapping missing"
    );
    t.syscall_ok(libc::SYS_munmap, [addr, 4096, 0, 0, 0, 0])
        .unwrap();
    let err = t
        .syscall_ok(libc::SYS_close, [9999, 0, 0, 0, 0, 0])
        .unwrap_err();
    assert_eq!(err.errno(), Some(libc::EBADF));
    t.release().unwrap();

    // Still sleeping, still alive, not traced.
    wait_sleeping(pid);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(status.contains("TracerPid:\t0"));
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn blocked_read_restarts_after_release() {
    let mut child = Command::new("cat")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    wait_sleeping(pid);
    let mut t = Tracee::seize(Tid(pid)).unwrap();
    // Interrupted inside read(2): the kernel reports a restartable error.
    let regs = *t.orig_regs();
    assert_eq!(regs.orig_rax, libc::SYS_read as u64);
    assert_eq!(regs.rax as i64, -512, "expected -ERESTARTSYS");
    for _ in 0..10 {
        assert_eq!(
            t.syscall(libc::SYS_getppid, [0; 6]).unwrap(),
            std::process::id() as i64
        );
    }
    t.release().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"still here\n").unwrap();
    drop(stdin);
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert_eq!(out, "still here\n");
    assert!(child.wait().unwrap().success());
}

#[test]
fn registers_and_mask_round_trip() {
    let mut child = Command::new("sleep").arg("100").spawn().unwrap();
    let pid = child.id() as i32;
    wait_sleeping(pid);
    let mut t = Tracee::seize(Tid(pid)).unwrap();
    let xs = t.get_xstate().unwrap();
    assert!(xs.len() >= 576, "XSAVE area too small: {}", xs.len());
    t.set_xstate(&xs).unwrap();
    assert_eq!(t.get_xstate().unwrap(), xs);
    let regs = t.get_regs().unwrap();
    t.set_regs(&regs).unwrap();
    // A pending blocked signal must survive remote syscalls: queue SIGUSR1 while we hold
    // every signal blocked, then look at it with PEEKSIGINFO.
    // SAFETY: kill(2) has no memory preconditions.
    unsafe { libc::kill(pid, libc::SIGUSR2) };
    t.syscall(libc::SYS_getpid, [0; 6]).unwrap();
    let shared = t.pending_signals(true).unwrap();
    assert_eq!(shared.len(), 1);
    assert_eq!(
        i32::from_ne_bytes(shared[0][..4].try_into().unwrap()),
        libc::SIGUSR2
    );
    t.release().unwrap();
    // sleep(1) has no handler for SIGUSR2: it now dies of it.
    let st = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(st.signal(), Some(libc::SIGUSR2));
}

#[test]
fn seize_missing_pid_is_a_clear_error() {
    let e = Tracee::seize(Tid(i32::MAX - 1)).unwrap_err();
    assert!(matches!(e, parasite::ParasiteError::Seize { tid: Tid(p), .. } if p == i32::MAX - 1));
    assert!(e.to_string().contains(&format!("{}", i32::MAX - 1)));
}

#[test]
fn remote_syscall_cost() {
    let mut child = Command::new("sleep").arg("100").spawn().unwrap();
    let pid = child.id() as i32;
    wait_sleeping(pid);
    let mut t = Tracee::seize(Tid(pid)).unwrap();
    let n = 2000;
    let start = std::time::Instant::now();
    for _ in 0..n {
        assert_eq!(t.syscall(libc::SYS_getpid, [0; 6]).unwrap(), pid as i64);
    }
    let per = start.elapsed() / n;
    eprintln!("remote syscall: {per:?} each");
    let area = t
        .syscall_ok(
            libc::SYS_mmap,
            [
                0,
                4096 + parasite::batch_len(64) as u64,
                (libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC) as u64,
                (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64,
                u64::MAX,
                0,
            ],
        )
        .unwrap();
    let calls = vec![(libc::SYS_getpid, [0; 6]); 64];
    t.write_mem(RemoteAddr(area), &parasite::BATCH_CODE)
        .unwrap();
    let start = std::time::Instant::now();
    for _ in 0..n / 64 {
        let r = t
            .syscalls(RemoteAddr(area), RemoteAddr(area + 4096), &calls)
            .unwrap();
        assert!(r.iter().all(|&x| x == pid as i64));
    }
    let per = start.elapsed() / (n / 64 * 64);
    eprintln!("batched remote syscall: {per:?} each");
    t.release().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn syscall_batch_runs_in_one_resume() {
    let mut child = Command::new("sleep").arg("100").spawn().unwrap();
    let pid = child.id() as i32;
    wait_sleeping(pid);
    let mut t = Tracee::seize(Tid(pid)).unwrap();
    let before = *t.orig_regs();
    let area = t
        .syscall_ok(
            libc::SYS_mmap,
            [
                0,
                8192,
                (libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC) as u64,
                (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64,
                u64::MAX,
                0,
            ],
        )
        .unwrap();
    // Output of uname goes past the batch's own bytes.
    let out = area + 4096;
    let calls = [
        (libc::SYS_getpid, [0; 6]),
        (libc::SYS_close, [9999, 0, 0, 0, 0, 0]),
        (libc::SYS_uname, [out, 0, 0, 0, 0, 0]),
        (libc::SYS_getppid, [0; 6]),
    ];
    assert!(parasite::batch_len(calls.len()) <= 2048);
    let (code, table) = (RemoteAddr(area), RemoteAddr(area + 2048));
    t.write_mem(code, &parasite::BATCH_CODE).unwrap();
    // The failing close stops the batch: nothing after it runs.
    let r = t.syscalls(code, table, &calls).unwrap();
    assert_eq!(r, [pid as i64, -(libc::EBADF as i64)]);
    let r = t
        .syscalls(code, table, &[calls[0], calls[2], calls[3]])
        .unwrap();
    assert_eq!(r, [pid as i64, 0, std::process::id() as i64]);
    let mut sysname = [0u8; 5];
    t.read_mem(RemoteAddr(out), &mut sysname).unwrap();
    assert_eq!(&sysname, b"Linux");
    // An empty batch runs nothing and still comes back.
    assert!(t.syscalls(code, table, &[]).unwrap().is_empty());
    // Single-step syscalls still work after a batch.
    assert_eq!(t.syscall(libc::SYS_getpid, [0; 6]).unwrap(), pid as i64);
    t.syscall_ok(libc::SYS_munmap, [area, 8192, 0, 0, 0, 0])
        .unwrap();
    assert_eq!(t.orig_regs().rip, before.rip);
    t.release().unwrap();
    // Back in its sleep, untraced, alive.
    wait_sleeping(pid);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(status.contains("TracerPid:\t0"));
    assert!(child.try_wait().unwrap().is_none());
    child.kill().unwrap();
    child.wait().unwrap();
}
