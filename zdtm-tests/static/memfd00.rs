//! memfd00: memfds keep name, contents, size, mode, seals and offsets.
//!
//! Three memfds: "crust plain" with 100 KiB of data and a second description
//! of it (reopened through /proc/self/fd, read-only, at its own offset);
//! "crust sealed" (MFD_ALLOW_SEALING) grown sparse to 1 MiB, its mode
//! changed, then sealed against growing, shrinking and writing; and one made
//! without sealing (which reports F_SEAL_SEAL). After restore each must keep
//! its link name, size, mode, seals, contents and offsets, the two
//! descriptions must still be one memfd, and the seals must still bite.

use zdtmtst::files::open;
use zdtmtst::{check, check_eq, fail, fd, Checker};

struct M {
    name: &'static str,
    fd: i32,
    link: std::path::PathBuf,
    size: i64,
    mode: u32,
    seals: i32,
    data: Vec<u8>,
    pos: i64,
}

fn memfd(name: &str, flags: u32) -> std::io::Result<i32> {
    let c = std::ffi::CString::new(name).map_err(std::io::Error::other)?;
    // SAFETY: `c` is a valid NUL-terminated name.
    let fd = unsafe { libc::memfd_create(c.as_ptr(), flags) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fd)
}

fn main() {
    zdtmtst::start();
    let setup = || -> std::io::Result<(Vec<M>, i32)> {
        let mut out = Vec::new();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 249) as u8).collect();
        let a = memfd("crust plain", 0)?;
        fd::write(a, &data)?;
        fd::lseek(a, 5000, libc::SEEK_SET)?;
        let a2 = open(
            std::path::Path::new(&format!("/proc/self/fd/{a}")),
            libc::O_RDONLY,
            0,
        )?;
        fd::lseek(a2, 70_000, libc::SEEK_SET)?;
        out.push(("crust plain", a, data.clone(), 0));

        let b = memfd("crust sealed", libc::MFD_ALLOW_SEALING)?;
        fd::write(b, b"head")?;
        // SAFETY: plain syscalls on an fd we own.
        unsafe {
            libc::ftruncate(b, 1 << 20);
            libc::fchmod(b, 0o640);
        }
        fd::fcntl(
            b,
            libc::F_ADD_SEALS,
            libc::F_SEAL_GROW | libc::F_SEAL_SHRINK | libc::F_SEAL_WRITE,
        )?;
        let mut bdata = b"head".to_vec();
        bdata.resize(1 << 20, 0);
        out.push(("crust sealed", b, bdata, 0));

        let c = memfd("crust unsealable", libc::MFD_CLOEXEC)?;
        out.push(("crust unsealable", c, Vec::new(), 0));
        let ms = out
            .into_iter()
            .map(|(name, f, data, _mode)| {
                Ok(M {
                    name,
                    fd: f,
                    link: fd::link(f)?,
                    size: fd::fstat(f)?.st_size,
                    mode: fd::fstat(f)?.st_mode & 0o7777,
                    seals: fd::fcntl(f, libc::F_GET_SEALS, 0)?,
                    data,
                    pos: fd::lseek(f, 0, libc::SEEK_CUR)?,
                })
            })
            .collect::<std::io::Result<Vec<M>>>()?;
        Ok((ms, a2))
    };
    let (ms, a2) = setup().unwrap_or_else(|e| fail(format!("setup: {e}")));
    if ms[2].seals != libc::F_SEAL_SEAL {
        fail(format!(
            "setup: unsealable memfd reports seals {:#x}",
            ms[2].seals
        ));
    }

    zdtmtst::ready();
    zdtmtst::wait_for_sigterm();

    let mut c = Checker::new();
    for m in &ms {
        let (n, f) = (m.name, m.fd);
        if let Some(l) = c.ok(&format!("{n}: readlink"), fd::link(f)) {
            check_eq!(c, l, m.link, "{n}: /proc/self/fd/{f}");
        }
        if let Some(st) = c.ok(&format!("{n}: fstat"), fd::fstat(f)) {
            check_eq!(c, st.st_size, m.size, "{n}: size");
            check_eq!(c, st.st_mode & 0o7777, m.mode, "{n}: mode");
        }
        if let Some(s) = c.ok(
            &format!("{n}: F_GET_SEALS"),
            fd::fcntl(f, libc::F_GET_SEALS, 0),
        ) {
            check_eq!(c, s, m.seals, "{n}: seals");
        }
        check_eq!(
            c,
            fd::lseek(f, 0, libc::SEEK_CUR).unwrap_or(-1),
            m.pos,
            "{n}: offset"
        );
        if let Some(b) = c.ok(&format!("{n}: pread"), fd::pread(f, m.size as usize + 1, 0)) {
            let want = if m.data.is_empty() {
                vec![0; m.size as usize]
            } else {
                m.data.clone()
            };
            check!(
                c,
                b == want,
                "{n}: contents differ ({} bytes read)",
                b.len()
            );
        }
    }
    // The second description of the plain memfd.
    if let (Some(x), Some(y)) = (
        c.ok("fstat", fd::fstat(ms[0].fd)),
        c.ok("fstat", fd::fstat(a2)),
    ) {
        check_eq!(
            c,
            x.st_ino,
            y.st_ino,
            "the two descriptions of \"crust plain\" are one memfd"
        );
    }
    check_eq!(
        c,
        fd::lseek(a2, 0, libc::SEEK_CUR).unwrap_or(-1),
        70_000,
        "second description: offset"
    );
    check_eq!(
        c,
        fd::fcntl(a2, libc::F_GETFL, 0).unwrap_or(-1) & libc::O_ACCMODE,
        libc::O_RDONLY,
        "second description: access mode"
    );
    if c.ok("write", fd::write(ms[0].fd, b"zz")).is_some() {
        if let Some(b) = c.ok("pread", fd::pread(a2, 2, 5000)) {
            check_eq!(c, b, b"zz", "a write to one description seen by the other");
        }
    }
    let w = fd::write(ms[1].fd, b"x");
    check!(c, w.is_err(), "the write-sealed memfd took a write: {w:?}");
    c.finish();
}
