//! fifo00: named pipes keep their queue, ends and flags.
//!
//! Makes a fifo and opens it three times: `O_RDWR` (first, so the others do
//! not block), `O_RDONLY | O_NONBLOCK` and `O_WRONLY`; raises its capacity
//! and queues 5000 bytes. A second fifo is opened `O_RDWR`, filled and then
//! unlinked. After restore every descriptor must keep its flags and link,
//! all must be one pipe per fifo, `F_GETPIPE_SZ` and `FIONREAD` must be
//! unchanged, the queued bytes must come out in order, and new data must
//! pass from the write end to the read end. The unlinked fifo must stay
//! unlinked.

use std::path::Path;

use zdtmtst::files::open;
use zdtmtst::{check, check_eq, fail, fd, Checker};

fn mkfifo(p: &Path) -> std::io::Result<()> {
    let c =
        std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: `c` is a valid NUL-terminated path.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o640) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn main() {
    zdtmtst::start();
    let p1 = zdtmtst::temp_path("fifo00.a");
    let p2 = zdtmtst::temp_path("fifo00.b");
    zdtmtst::remove_at_exit(&p1);
    let data: Vec<u8> = (0..5000u32).map(|i| (i * 3 % 255) as u8).collect();
    let data2: Vec<u8> = b"in a fifo that has no name".to_vec();
    let setup = || -> std::io::Result<[i32; 4]> {
        mkfifo(&p1)?;
        let rw = open(&p1, libc::O_RDWR, 0)?;
        let rd = open(&p1, libc::O_RDONLY | libc::O_NONBLOCK, 0)?;
        let wr = open(&p1, libc::O_WRONLY, 0)?;
        fd::fcntl(wr, libc::F_SETPIPE_SZ, 256 << 10)?;
        fd::write(wr, &data)?;
        mkfifo(&p2)?;
        let un = open(&p2, libc::O_RDWR | libc::O_NONBLOCK, 0)?;
        fd::write(un, &data2)?;
        std::fs::remove_file(&p2)?;
        Ok([rw, rd, wr, un])
    };
    let fds = setup().unwrap_or_else(|e| fail(format!("setup: {e}")));
    let before: Vec<(i32, std::path::PathBuf)> = fds
        .iter()
        .map(|&f| {
            (
                fd::fcntl(f, libc::F_GETFL, 0).unwrap_or_else(|e| fail(e)),
                fd::link(f).unwrap_or_else(|e| fail(e)),
            )
        })
        .collect();

    zdtmtst::ready();
    zdtmtst::wait_for_sigterm();

    let mut c = Checker::new();
    let [rw, rd, wr, un] = fds;
    for (&f, (fl, link)) in fds.iter().zip(&before) {
        check_eq!(
            c,
            fd::fcntl(f, libc::F_GETFL, 0).unwrap_or(-1),
            *fl,
            "fd {f}: F_GETFL"
        );
        if let Some(l) = c.ok("readlink", fd::link(f)) {
            check_eq!(c, &l, link, "fd {f}: link");
        }
        if let Some(st) = c.ok("fstat", fd::fstat(f)) {
            check!(
                c,
                st.st_mode & libc::S_IFMT == libc::S_IFIFO,
                "fd {f}: not a fifo"
            );
        }
    }
    let inos: Vec<u64> = [rw, rd, wr]
        .iter()
        .filter_map(|&f| fd::fstat(f).ok())
        .map(|s| s.st_ino)
        .collect();
    check!(
        c,
        inos.len() == 3 && inos.iter().all(|&i| i == inos[0]),
        "fifo a: ends are different files: {inos:?}"
    );
    check_eq!(
        c,
        fd::fcntl(rd, libc::F_GETPIPE_SZ, 0).unwrap_or(-1),
        256 << 10,
        "fifo a: F_GETPIPE_SZ"
    );
    check_eq!(c, fd::nread(rd).ok(), Some(data.len()), "fifo a: FIONREAD");
    check_eq!(
        c,
        fd::nread(un).ok(),
        Some(data2.len()),
        "unlinked fifo: FIONREAD"
    );
    check!(c, !p2.exists(), "{} exists again", p2.display());
    if let Some(b) = c.ok("read", fd::read(rd, data.len() + 10)) {
        check!(
            c,
            b == data,
            "fifo a: queued bytes differ ({} read)",
            b.len()
        );
    }
    if c.ok("write", fd::write(wr, b"fresh")).is_some() {
        check_eq!(
            c,
            fd::read(rw, 10).ok(),
            Some(b"fresh".to_vec()),
            "fifo a: new data"
        );
    }
    if let Some(b) = c.ok("read", fd::read(un, 100)) {
        check_eq!(c, b, data2, "unlinked fifo: queued bytes");
    }
    c.finish();
}
