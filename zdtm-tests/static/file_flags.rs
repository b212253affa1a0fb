//! file_flags: open flags, directories and symlinks on tmpfs and the root file system.
//!
//! Opens, on the test's directory (the root file system) and on /dev/shm
//! (tmpfs): a file with `O_DIRECT`, one with `O_NOATIME | O_APPEND`, one with
//! `O_LARGEFILE | O_NONBLOCK` and `O_CLOEXEC` on a dup of it only; a file
//! opened through a symlink; the symlink itself (`O_PATH | O_NOFOLLOW`); a
//! directory read part way with `getdents64`. After restore every descriptor
//! must have its `F_GETFL` and `F_GETFD` flags, offset, device and inode, and
//! the directory must continue listing where it stopped.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use zdtmtst::files::open;
use zdtmtst::{check_eq, fail, fd, Checker};

struct Fd {
    what: String,
    fd: i32,
    fl: i32,
    fdfl: i32,
    pos: i64,
    dev_ino: (u64, u64),
}

fn getdents(fd: i32) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    // SAFETY: `buf` is writable for its length.
    let n = unsafe { libc::syscall(libc::SYS_getdents64, fd, buf.as_mut_ptr(), buf.len()) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

fn setup(base: &Path, tag: &str, out: &mut Vec<Fd>) -> std::io::Result<()> {
    let p = |n: &str| -> PathBuf {
        let p = base.join(format!("file_flags.{tag}.{n}"));
        zdtmtst::remove_at_exit(&p);
        p
    };
    let data = vec![7u8; 64 << 10];
    let direct = p("direct");
    std::fs::write(&direct, &data)?;
    let noatime = p("noatime");
    std::fs::write(&noatime, &data)?;
    let large = p("large");
    std::fs::write(&large, &data)?;
    let link = p("link");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&large, &link)?;
    let dir = p("dir");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir)?;
    for i in 0..40 {
        std::fs::write(dir.join(format!("entry-with-a-long-name-{i:03}")), b"")?;
    }
    let mut add = |what: &str, fd: i32, pos: i64| -> std::io::Result<()> {
        if pos > 0 {
            fd::lseek(fd, pos, libc::SEEK_SET)?;
        }
        let st = fd::fstat(fd)?;
        out.push(Fd {
            what: format!("{tag} {what}"),
            fd,
            fl: fd::fcntl(fd, libc::F_GETFL, 0)?,
            fdfl: fd::fcntl(fd, libc::F_GETFD, 0)?,
            pos: fd::lseek(fd, 0, libc::SEEK_CUR).unwrap_or(-1),
            dev_ino: (st.st_dev, st.st_ino),
        });
        Ok(())
    };
    add(
        "O_DIRECT",
        open(&direct, libc::O_RDWR | libc::O_DIRECT, 0)?,
        8192,
    )?;
    add(
        "O_NOATIME|O_APPEND",
        open(
            &noatime,
            libc::O_WRONLY | libc::O_APPEND | libc::O_NOATIME,
            0,
        )?,
        0,
    )?;
    let l = open(
        &large,
        libc::O_RDONLY | libc::O_LARGEFILE | libc::O_NONBLOCK,
        0,
    )?;
    add("O_LARGEFILE|O_NONBLOCK", l, 333)?;
    add(
        "dup with O_CLOEXEC",
        fd::fcntl(l, libc::F_DUPFD_CLOEXEC, 0)?,
        333,
    )?;
    add("through a symlink", open(&link, libc::O_RDWR, 0)?, 77)?;
    add(
        "the symlink, O_PATH|O_NOFOLLOW",
        open(&link, libc::O_PATH | libc::O_NOFOLLOW, 0)?,
        0,
    )?;
    let d = open(&dir, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    getdents(d)?;
    add("directory read part way", d, 0)?;
    Ok(())
}

fn main() {
    zdtmtst::start();
    let mut fds = Vec::new();
    let here = std::env::current_dir().unwrap_or_else(|e| fail(e));
    setup(&here, "rootfs", &mut fds).unwrap_or_else(|e| fail(format!("setup on rootfs: {e}")));
    setup(
        Path::new("/dev/shm"),
        &format!("tmpfs.{}", std::process::id()),
        &mut fds,
    )
    .unwrap_or_else(|e| fail(format!("setup on /dev/shm: {e}")));
    // What each directory lists next, to compare after restore.
    let next: Vec<Option<Vec<u8>>> = fds
        .iter()
        .map(|f| {
            f.what.ends_with("directory read part way").then(|| {
                let pos = f.pos;
                let r = getdents(f.fd).unwrap_or_else(|e| fail(e));
                fd::lseek(f.fd, pos, libc::SEEK_SET).unwrap_or_else(|e| fail(e));
                r
            })
        })
        .collect();

    zdtmtst::ready();
    zdtmtst::wait_for_sigterm();

    let mut c = Checker::new();
    for (f, next) in fds.iter().zip(&next) {
        let (w, n) = (&f.what, f.fd);
        if let Some(v) = c.ok(&format!("{w}: F_GETFL"), fd::fcntl(n, libc::F_GETFL, 0)) {
            check_eq!(c, v, f.fl, "{w}: fd {n}: F_GETFL");
        }
        if let Some(v) = c.ok(&format!("{w}: F_GETFD"), fd::fcntl(n, libc::F_GETFD, 0)) {
            check_eq!(c, v, f.fdfl, "{w}: fd {n}: F_GETFD");
        }
        check_eq!(
            c,
            fd::lseek(n, 0, libc::SEEK_CUR).unwrap_or(-1),
            f.pos,
            "{w}: fd {n}: offset"
        );
        if let Some(st) = c.ok(&format!("{w}: fstat"), fd::fstat(n)) {
            check_eq!(
                c,
                (st.st_dev, st.st_ino),
                f.dev_ino,
                "{w}: fd {n}: device and inode"
            );
        }
        if let Some(want) = next {
            if let Some(got) = c.ok(&format!("{w}: getdents64"), getdents(n)) {
                check_eq!(c, &got, want, "{w}: fd {n}: next directory entries");
            }
        }
    }
    if let Some(md) = c.ok("stat", std::fs::metadata(&here)) {
        check_eq!(
            c,
            md.dev(),
            fds[0].dev_ino.0,
            "rootfs files stay on the test's file system"
        );
    }
    c.finish();
}
