//! zdtm protocol helpers shared by every test program.
//!
//! A test program is started as `PROG --pidfile=P --outfile=O [args]`. It sets
//! up one kind of kernel state, calls [`ready`] (which writes its pid to `P`
//! atomically), waits for SIGTERM (meanwhile it is dumped, killed and restored,
//! possibly several times), then checks that the state survived and reports
//! with [`pass`] or [`fail`], which write `PASS` or `FAIL: why` to `O` and exit.
//!
//! The usual shape of a program:
//!
//! ```no_run
//! let _args = zdtmtst::start();
//! // ... set up state ...
//! zdtmtst::ready();
//! zdtmtst::wait_for_sigterm();
//! let mut c = zdtmtst::Checker::new();
//! zdtmtst::check!(c, 1 + 1 == 2, "arithmetic is broken");
//! c.finish();
//! ```
//!
//! A program reports only after SIGTERM, never earlier: a setup error before
//! [`ready`] is reported with [`fail`] right away (the harness then sees the
//! program exit without a pidfile), and later failures are collected in a
//! [`Checker`] and reported once SIGTERM has arrived.
//!
//! Tests made of several processes use [`tree`] (members forked on pipes
//! to the root, which orders them to check themselves and collects their
//! verdicts) and [`plan`] (a tree with its sessions and process groups
//! described as data); multi-threaded tests use [`thread`] for per-thread
//! names, scheduling, affinity and TLS base.
//!
//! Signal masks are handled with the raw `rt_sigprocmask`/`rt_sigsuspend`
//! system calls on the kernel's 64-bit sigset, not through glibc, because
//! glibc silently drops its internal signals (32 and 33) from masks and a test
//! of the signal mask must see exactly what the kernel holds.

pub mod fd;
pub mod files;
pub mod maps;
pub mod mem;
pub mod pattern;
pub mod plan;
pub mod proc;
pub mod sig;
pub mod thread;
pub mod tree;

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

/// Why the command line could not be understood.
#[derive(Debug, thiserror::Error)]
pub enum ArgsError {
    /// A required `--NAME=VALUE` option is absent.
    #[error("missing required option --{0}=PATH")]
    Missing(&'static str),
    /// An option that takes a value was given none.
    #[error("option --{0} needs a value")]
    NoValue(&'static str),
    /// An option was given twice.
    #[error("option --{0} given more than once")]
    Duplicate(&'static str),
}

/// The parsed command line of a test program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    /// Where [`ready`] writes the pid.
    pub pidfile: PathBuf,
    /// Where [`pass`]/[`fail`] write the verdict.
    pub outfile: PathBuf,
    /// Every other argument, in order (the descriptor's `args`).
    pub extra: Vec<OsString>,
}

impl Args {
    /// Parses arguments (without the program name). `--pidfile=P` and
    /// `--pidfile P` are both accepted, likewise for `--outfile`; everything
    /// else is passed through in [`Args::extra`].
    pub fn parse<I>(args: I) -> Result<Args, ArgsError>
    where
        I: IntoIterator<Item = OsString>,
    {
        let mut pidfile = None;
        let mut outfile = None;
        let mut extra = Vec::new();
        let mut it = args.into_iter();
        while let Some(arg) = it.next() {
            let bytes = arg.as_bytes();
            let mut matched = false;
            for (name, slot) in [("pidfile", &mut pidfile), ("outfile", &mut outfile)] {
                let flag = format!("--{name}");
                let value = if bytes == flag.as_bytes() {
                    Some(it.next().ok_or(ArgsError::NoValue(name))?)
                } else {
                    bytes
                        .strip_prefix(format!("{flag}=").as_bytes())
                        .map(|rest| OsStr::from_bytes(rest).to_owned())
                };
                if let Some(v) = value {
                    if v.is_empty() {
                        return Err(ArgsError::NoValue(name));
                    }
                    if slot.replace(PathBuf::from(v)).is_some() {
                        return Err(ArgsError::Duplicate(name));
                    }
                    matched = true;
                    break;
                }
            }
            if !matched {
                extra.push(arg);
            }
        }
        Ok(Args {
            pidfile: pidfile.ok_or(ArgsError::Missing("pidfile"))?,
            outfile: outfile.ok_or(ArgsError::Missing("outfile"))?,
            extra,
        })
    }

    /// The extra arguments as UTF-8 strings (lossy).
    pub fn extra_strings(&self) -> Vec<String> {
        self.extra
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }
}

static ARGS: OnceLock<Args> = OnceLock::new();
static SCRATCH_DIR: OnceLock<PathBuf> = OnceLock::new();
static SIGTERM_FLAG: AtomicBool = AtomicBool::new(false);
static CLEANUP: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

extern "C" fn on_sigterm(_sig: libc::c_int) {
    SIGTERM_FLAG.store(true, Ordering::SeqCst);
}

/// Parses the command line and installs the SIGTERM handler with
/// `SA_RESTART`. On a bad command line, prints why and exits with status 2.
pub fn start() -> Args {
    start_with(libc::SA_RESTART)
}

/// Like [`start`], with the given `sa_flags` for the SIGTERM handler (for
/// example `0` so that blocking system calls return `EINTR` on SIGTERM).
pub fn start_with(sa_flags: libc::c_int) -> Args {
    let args = match Args::parse(std::env::args_os().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            let prog = std::env::args().next().unwrap_or_default();
            eprintln!("{prog}: {e}");
            eprintln!("usage: {prog} --pidfile=PATH --outfile=PATH [ARGS...]");
            std::process::exit(2);
        }
    };
    let _ = ARGS.set(args.clone());
    let _ = SCRATCH_DIR.set(scratch_dir());
    if let Err(e) = install_sigterm(sa_flags) {
        fail(format!("installing the SIGTERM handler: {e}"));
    }
    // An inherited blocked SIGTERM would make the wait never end.
    if let Err(e) = sig::unblock(sig::bit(libc::SIGTERM)) {
        fail(format!("unblocking SIGTERM: {e}"));
    }
    args
}

/// Installs the flag-setting SIGTERM handler with `sa_flags` and an empty
/// `sa_mask`. [`start_with`] calls this; call it again to change the flags.
pub fn install_sigterm(sa_flags: libc::c_int) -> std::io::Result<()> {
    // SAFETY: an all-zero `sigaction` is a valid value (SIG_DFL, empty mask).
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = on_sigterm as *const () as libc::sighandler_t;
    sa.sa_flags = sa_flags;
    // SAFETY: `sa` is fully initialized; the handler only stores to an atomic,
    // which is async-signal-safe.
    if unsafe { libc::sigaction(libc::SIGTERM, &sa, std::ptr::null_mut()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The address of the SIGTERM handler, for tests comparing dispositions.
pub fn sigterm_handler_addr() -> usize {
    on_sigterm as *const () as usize
}

/// Whether SIGTERM has arrived.
pub fn sigterm_received() -> bool {
    SIGTERM_FLAG.load(Ordering::SeqCst)
}

/// The flag the SIGTERM handler sets, for code that polls it from assembly
/// (it is one byte, non-zero once SIGTERM arrived).
pub fn sigterm_flag() -> &'static AtomicBool {
    &SIGTERM_FLAG
}

fn args() -> Option<&'static Args> {
    ARGS.get()
}

/// Writes `contents` to `path` through `path.tmp` and a rename, so a reader
/// never sees a partial file.
pub fn write_atomic(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(contents)?;
        f.sync_data()?;
    }
    std::fs::rename(&tmp, path)
}

/// Writes this process's pid to the pidfile: the state is set up and the
/// harness may dump it now.
pub fn ready() {
    prepare_ready().commit();
}

/// A pidfile written under its temporary name, waiting for the rename that
/// announces readiness. Code that must be ready without calling any
/// function (say, from inside an assembly block holding registers) prepares
/// this first and does the `rename(2)` system call itself.
#[derive(Debug)]
pub struct ReadyFile {
    tmp: std::ffi::CString,
    path: std::ffi::CString,
}

impl ReadyFile {
    /// The temporary file holding the pid (NUL-terminated).
    pub fn tmp_ptr(&self) -> *const libc::c_char {
        self.tmp.as_ptr()
    }

    /// The pidfile (NUL-terminated).
    pub fn path_ptr(&self) -> *const libc::c_char {
        self.path.as_ptr()
    }

    /// Renames the temporary file to the pidfile.
    pub fn commit(self) {
        // SAFETY: both are valid NUL-terminated paths owned by `self`.
        if unsafe { libc::rename(self.tmp_ptr(), self.path_ptr()) } != 0 {
            fail(format!(
                "renaming {:?} to {:?}: {}",
                self.tmp,
                self.path,
                last_err()
            ));
        }
    }
}

/// Writes the pid to `PIDFILE.tmp`; [`ReadyFile::commit`] (or a raw
/// `rename` of the two paths) then makes it visible.
pub fn prepare_ready() -> ReadyFile {
    let Some(a) = args() else {
        eprintln!("ready() called before start()");
        std::process::exit(2);
    };
    let mut tmp = a.pidfile.as_os_str().to_owned();
    tmp.push(".tmp");
    let pid = std::process::id();
    if let Err(e) = std::fs::write(&tmp, format!("{pid}\n")) {
        fail(format!("writing {}: {e}", Path::new(&tmp).display()));
    }
    let cstr = |p: &std::ffi::OsStr| {
        std::ffi::CString::new(p.as_bytes())
            .unwrap_or_else(|_| fail(format!("path {p:?} contains a NUL byte")))
    };
    ReadyFile {
        tmp: cstr(&tmp),
        path: cstr(a.pidfile.as_os_str()),
    }
}

/// Sleeps until SIGTERM arrives, without a race: SIGTERM is blocked while
/// the flag is tested and atomically unblocked by `rt_sigsuspend`, which
/// keeps every other signal of the current mask blocked. The signal mask is
/// exactly as before when this returns.
pub fn wait_for_sigterm() {
    let term = sig::bit(libc::SIGTERM);
    let old = match sig::block(term) {
        Ok(old) => old,
        Err(e) => fail(format!("blocking SIGTERM: {e}")),
    };
    while !sigterm_received() {
        if let Err(e) = sig::suspend(old & !term) {
            if e.raw_os_error() != Some(libc::EINTR) {
                fail(format!("rt_sigsuspend: {e}"));
            }
        }
    }
    if let Err(e) = sig::set_mask(old) {
        fail(format!("restoring the signal mask {old:#x}: {e}"));
    }
}

/// Sleeps in `rt_sigsuspend(mask)` until SIGTERM arrives, and leaves the
/// signal mask to the kernel: when this returns, the mask is what the kernel
/// restored from the one saved at the call (`saved_sigmask`). The caller
/// must have SIGTERM blocked before the call, or it may be missed, and
/// `mask` must not block it.
pub fn suspend_until_sigterm(mask: u64) {
    while !sigterm_received() {
        if let Err(e) = sig::suspend(mask) {
            if e.raw_os_error() != Some(libc::EINTR) {
                fail(format!("rt_sigsuspend({mask:#x}): {e}"));
            }
        }
    }
}

/// Removes `path` (a file, or a directory with its contents) when the
/// program reports its verdict.
pub fn remove_at_exit(path: impl Into<PathBuf>) {
    let mut list = CLEANUP.lock().unwrap_or_else(|p| p.into_inner());
    list.push(path.into());
}

fn run_cleanup() {
    let list = std::mem::take(&mut *CLEANUP.lock().unwrap_or_else(|p| p.into_inner()));
    for p in list.iter().rev() {
        let r = match std::fs::symlink_metadata(p) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(p),
            Ok(_) => std::fs::remove_file(p),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = r {
            eprintln!("cleanup: removing {}: {e}", p.display());
        }
    }
}

fn verdict(line: &str, code: i32) -> ! {
    run_cleanup();
    match args() {
        Some(a) => {
            if let Err(e) = write_atomic(&a.outfile, line.as_bytes()) {
                eprintln!("writing outfile {}: {e}", a.outfile.display());
                std::process::exit(2);
            }
        }
        None => eprint!("(no outfile) {line}"),
    }
    std::process::exit(code)
}

/// Reports success and exits with status 0.
pub fn pass() -> ! {
    verdict("PASS\n", 0)
}

/// Reports failure with the reason (made one line) and exits with status 1.
pub fn fail(why: impl fmt::Display) -> ! {
    let why = why.to_string().replace('\n', "; ");
    eprintln!("FAIL: {why}");
    verdict(&format!("FAIL: {why}\n"), 1)
}

/// How many failure messages a [`Checker`] reports verbatim.
const MAX_REPORTED: usize = 16;

/// Collects failed checks so a program reports all of them at once.
#[derive(Debug, Default)]
pub struct Checker {
    failures: Vec<String>,
    checks: usize,
}

impl Checker {
    /// An empty checker.
    pub fn new() -> Checker {
        Checker::default()
    }

    /// Records that `cond` must hold; `msg` is evaluated only on failure.
    pub fn check(&mut self, cond: bool, msg: impl FnOnce() -> String) -> bool {
        self.checks += 1;
        if !cond {
            self.fail(msg());
        }
        cond
    }

    /// Records a failure.
    pub fn fail(&mut self, msg: impl Into<String>) {
        let msg = msg.into();
        eprintln!("check failed: {msg}");
        self.failures.push(msg);
    }

    /// Records a failure unless `res` is `Ok`, and returns the value.
    pub fn ok<T, E: fmt::Display>(&mut self, what: &str, res: Result<T, E>) -> Option<T> {
        self.checks += 1;
        match res {
            Ok(v) => Some(v),
            Err(e) => {
                self.fail(format!("{what}: {e}"));
                None
            }
        }
    }

    /// Whether every check so far held.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// The failure messages so far.
    pub fn failures(&self) -> &[String] {
        &self.failures
    }

    /// The failures as one line, or `None` if everything held.
    pub fn summary(&self) -> Option<String> {
        if self.failures.is_empty() {
            return None;
        }
        let mut s = self.failures[..self.failures.len().min(MAX_REPORTED)].join("; ");
        if self.failures.len() > MAX_REPORTED {
            s.push_str(&format!(
                "; ... and {} more",
                self.failures.len() - MAX_REPORTED
            ));
        }
        Some(s)
    }

    /// Reports the verdict and exits: [`pass`] if nothing failed (and at
    /// least one check ran), [`fail`] with all messages otherwise.
    pub fn finish(self) -> ! {
        if self.checks == 0 && self.failures.is_empty() {
            fail("no check was run");
        }
        match self.summary() {
            None => pass(),
            Some(s) => fail(s),
        }
    }
}

/// Checks a condition, recording a formatted message in a [`Checker`] when
/// it does not hold. Evaluates to the condition.
#[macro_export]
macro_rules! check {
    ($c:expr, $cond:expr, $($fmt:tt)+) => {
        $c.check($cond, || format!($($fmt)+))
    };
}

/// Checks `found == expected`, recording `what: expected E, found F` (both
/// with `{:?}`) in a [`Checker`] when they differ. Evaluates to the
/// comparison.
#[macro_export]
macro_rules! check_eq {
    ($c:expr, $found:expr, $expected:expr, $($fmt:tt)+) => {{
        let (found, expected) = (&$found, &$expected);
        $c.check(found == expected, || {
            format!("{}: expected {:?}, found {:?}", format!($($fmt)+), expected, found)
        })
    }};
}

/// Where [`temp_path`] puts files: the working directory the program was
/// started in (the harness gives each trial its own, and removes it or keeps
/// it with the logs, even when the program is killed before it can clean
/// up), or the temporary directory if that one is not writable.
fn scratch_dir() -> PathBuf {
    let writable = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            // SAFETY: `c` is a valid NUL-terminated path.
            .map(|c| unsafe { libc::access(c.as_ptr(), libc::W_OK) } == 0)
            .unwrap_or(false)
    };
    match std::env::current_dir() {
        Ok(d) if writable(&d) => d,
        _ => std::env::temp_dir(),
    }
}

/// A fresh path `DIR/zdtm-TAG-PID-RANDOM`; nothing is created. `DIR` is
/// the directory the program started in (see [`start`]) or, before
/// [`start`], the temporary directory. The random part keeps names unique
/// even when every test runs as pid 1 of its own namespace.
pub fn temp_path(tag: &str) -> PathBuf {
    let mut r = [0u8; 8];
    // SAFETY: `r` is a writable buffer of exactly `r.len()` bytes.
    let n = unsafe { libc::getrandom(r.as_mut_ptr().cast(), r.len(), 0) };
    let rand = if n == r.len() as isize {
        u64::from_ne_bytes(r)
    } else {
        // getrandom cannot fail for 8 bytes once the pool is up; fall back
        // to the clock rather than give up.
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
    };
    let dir = SCRATCH_DIR
        .get()
        .cloned()
        .unwrap_or_else(std::env::temp_dir);
    dir.join(format!("zdtm-{tag}-{}-{rand:016x}", std::process::id()))
}

/// The system page size.
pub fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n <= 0 {
        4096
    } else {
        n as usize
    }
}

/// The kernel's `O_LARGEFILE` on x86_64, which `F_GETFL` reports for every
/// file opened by a 64-bit task (the libc crate defines it as 0 there).
pub const O_LARGEFILE_KERNEL: libc::c_int = 0o100000;

/// `errno` of the last failed libc call, as an `io::Error`.
pub fn last_err() -> std::io::Error {
    std::io::Error::last_os_error()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn parses_both_option_forms_and_passes_others_through() {
        let a = Args::parse(os(&["--pidfile=/p", "x", "--outfile", "/o", "--y=1"])).unwrap();
        assert_eq!(a.pidfile, PathBuf::from("/p"));
        assert_eq!(a.outfile, PathBuf::from("/o"));
        assert_eq!(a.extra, os(&["x", "--y=1"]));
    }

    #[test]
    fn missing_and_duplicate_options_are_errors() {
        assert!(matches!(
            Args::parse(os(&["--pidfile=/p"])),
            Err(ArgsError::Missing("outfile"))
        ));
        assert!(matches!(
            Args::parse(os(&["--pidfile=/p", "--outfile=/o", "--pidfile=/q"])),
            Err(ArgsError::Duplicate("pidfile"))
        ));
        assert!(matches!(
            Args::parse(os(&["--outfile=/o", "--pidfile"])),
            Err(ArgsError::NoValue("pidfile"))
        ));
        assert!(matches!(
            Args::parse(os(&["--outfile=/o", "--pidfile="])),
            Err(ArgsError::NoValue("pidfile"))
        ));
    }

    #[test]
    fn checker_collects_and_summarizes() {
        let mut c = Checker::new();
        assert!(check!(c, true, "never"));
        assert!(!check!(c, 1 > 2, "one {}", 1));
        assert!(!check_eq!(c, 3, 4, "value at {:#x}", 16));
        assert_eq!(
            c.summary().unwrap(),
            "one 1; value at 0x10: expected 4, found 3"
        );
        let mut many = Checker::new();
        for i in 0..MAX_REPORTED + 3 {
            many.fail(format!("f{i}"));
        }
        assert!(many.summary().unwrap().ends_with("; ... and 3 more"));
    }

    #[test]
    fn temp_paths_differ() {
        assert_ne!(temp_path("x"), temp_path("x"));
    }

    #[test]
    fn write_atomic_replaces_contents() {
        let p = temp_path("atomic");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two\n").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two\n");
        std::fs::remove_file(&p).unwrap();
    }
}
