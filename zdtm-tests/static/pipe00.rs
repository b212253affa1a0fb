//! pipe00: pipes keep their buffered data, size, flags and ends.
//!
//! Three pipes, all ends held by this task except where noted:
//! - A: 10000 bytes written and unread, pipe size raised to 128 KiB with
//!   `F_SETPIPE_SZ`, read end `O_NONBLOCK`;
//! - B: filled to capacity (writes until `EAGAIN` on a non-blocking write
//!   end), so the engine must save a full buffer of about 64 KiB;
//! - C: some bytes written, then the write end closed: after the data the
//!   reader must see end of file, not block.
//!
//! After restore each end must keep its fd number and `F_GETFL` flags, both
//! ends must still be one pipe (one inode) and the pipes distinct,
//! `F_GETPIPE_SZ` and `FIONREAD` must be unchanged, every byte must come
//! back in order, and the pipes must still carry new data.

use zdtmtst::fd;
use zdtmtst::{check, check_eq, fail, Checker};

fn bytes(n: usize, salt: u64) -> Vec<u8> {
    (0..n)
        .map(|i| (zdtmtst::pattern::word(i, salt) >> 7) as u8)
        .collect()
}

struct Pipe {
    name: &'static str,
    rd: i32,
    wr: Option<i32>,
    data: Vec<u8>,
    size: i32,
    rd_fl: i32,
    wr_fl: i32,
}

fn main() {
    zdtmtst::start();
    let setup = || -> std::io::Result<Vec<Pipe>> {
        let mut out = Vec::new();

        let (rd, wr) = fd::pipe(0)?;
        fd::fcntl(wr, libc::F_SETPIPE_SZ, 128 << 10)?;
        fd::fcntl(rd, libc::F_SETFL, libc::O_NONBLOCK)?;
        let data = bytes(10_000, 1);
        for chunk in data.chunks(3333) {
            fd::write(wr, chunk)?;
        }
        out.push(("A", rd, Some(wr), data));

        let (rd, wr) = fd::pipe(libc::O_NONBLOCK)?;
        fd::fcntl(rd, libc::F_SETFL, 0)?;
        let all = bytes(1 << 20, 2);
        let mut n = 0;
        // Big writes first, then single bytes into the last free space.
        for chunk in [4096, 1] {
            loop {
                match fd::write(wr, &all[n..n + chunk]) {
                    Ok(k) => n += k,
                    Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => break,
                    Err(e) => return Err(e),
                }
            }
        }
        out.push(("B", rd, Some(wr), all[..n].to_vec()));

        let (rd, wr) = fd::pipe(0)?;
        let data = bytes(777, 3);
        fd::write(wr, &data)?;
        fd::close(wr)?;
        out.push(("C", rd, None, data));

        out.into_iter()
            .map(|(name, rd, wr, data)| {
                Ok(Pipe {
                    name,
                    rd,
                    wr,
                    data,
                    size: fd::fcntl(rd, libc::F_GETPIPE_SZ, 0)?,
                    rd_fl: fd::fcntl(rd, libc::F_GETFL, 0)?,
                    wr_fl: wr.map_or(Ok(0), |w| fd::fcntl(w, libc::F_GETFL, 0))?,
                })
            })
            .collect()
    };
    let pipes = setup().unwrap_or_else(|e| fail(format!("setup: {e}")));
    if pipes[0].size != 128 << 10 || pipes[1].data.len() < 60_000 {
        fail(format!(
            "setup: pipe A size {}, pipe B holds {} of {}",
            pipes[0].size,
            pipes[1].data.len(),
            pipes[1].size
        ));
    }

    zdtmtst::ready();
    zdtmtst::wait_for_sigterm();

    let mut c = Checker::new();
    let mut inodes = Vec::new();
    for p in &pipes {
        let (n, rd) = (p.name, p.rd);
        let Some(now_ino) = c
            .ok(&format!("pipe {n}: fstat"), fd::fstat(rd))
            .map(|s| s.st_ino)
        else {
            continue;
        };
        check!(
            c,
            !inodes.contains(&now_ino),
            "pipe {n}: fd {rd} is the same pipe (inode {now_ino}) as another of the pipes"
        );
        inodes.push(now_ino);
        let ends = std::iter::once((rd, p.rd_fl)).chain(p.wr.map(|w| (w, p.wr_fl)));
        for (f, fl) in ends {
            if let Some(now) = c.ok(
                &format!("pipe {n}: fd {f}: F_GETFL"),
                fd::fcntl(f, libc::F_GETFL, 0),
            ) {
                check_eq!(c, now, fl, "pipe {n}: fd {f}: F_GETFL");
            }
            if let Some(st) = c.ok(&format!("pipe {n}: fd {f}: fstat"), fd::fstat(f)) {
                // A restored pipe is a new object with a new inode number;
                // what must hold is that both ends are one pipe, and no
                // two of the test's pipes became one.
                check!(
                    c,
                    st.st_mode & libc::S_IFMT == libc::S_IFIFO && st.st_ino == now_ino,
                    "pipe {n}: fd {f}: not the same pipe as fd {rd}: mode {:o}, inode {} vs {now_ino}",
                    st.st_mode,
                    st.st_ino
                );
            }
        }
        if let Some(sz) = c.ok(
            &format!("pipe {n}: F_GETPIPE_SZ"),
            fd::fcntl(rd, libc::F_GETPIPE_SZ, 0),
        ) {
            check_eq!(c, sz, p.size, "pipe {n}: F_GETPIPE_SZ");
        }
        if let Some(q) = c.ok(&format!("pipe {n}: FIONREAD"), fd::nread(rd)) {
            check_eq!(c, q, p.data.len(), "pipe {n}: bytes queued (FIONREAD)");
        }
    }
    if !c.passed() {
        c.finish();
    }
    for p in &pipes {
        let (n, rd) = (p.name, p.rd);
        let mut got = Vec::new();
        while got.len() < p.data.len() {
            match fd::read(rd, p.data.len() - got.len()) {
                Ok(b) if b.is_empty() => break,
                Ok(b) => got.extend_from_slice(&b),
                Err(e) => {
                    c.fail(format!("pipe {n}: read after {} bytes: {e}", got.len()));
                    break;
                }
            }
        }
        let pos = got.iter().zip(&p.data).position(|(a, b)| a != b);
        check!(
            c,
            got.len() == p.data.len() && pos.is_none(),
            "pipe {n}: read {} of {} bytes, first difference at {pos:?}",
            got.len(),
            p.data.len()
        );
        match p.wr {
            None => {
                let eof = fd::read(rd, 16);
                check!(
                    c,
                    matches!(eof, Ok(ref b) if b.is_empty()),
                    "pipe {n}: expected end of file after the data (write end closed), got {eof:?}"
                );
            }
            Some(wr) => {
                let fresh = bytes(100, 9);
                if c.ok(&format!("pipe {n}: write"), fd::write(wr, &fresh))
                    .is_some()
                {
                    if let Some(b) = c.ok(&format!("pipe {n}: read"), fd::read(rd, 200)) {
                        check_eq!(c, b, fresh, "pipe {n}: new data");
                    }
                }
            }
        }
    }
    c.finish();
}
