//! Starting a test program in its flavor: the hidden `cargo-zdtm __launch`.
//!
//! The harness runs this launcher instead of the test; it sets up the flavor and
//! then `execve`s the test, so no harness code runs in the test's process.
//!
//! - `h`: `setsid()` (the test leads its own session and process group, so its
//!   tree is self-contained: nothing of it points at the harness's session) and
//!   exec. The test keeps the launcher's pid and stays a direct child of the
//!   harness.
//! - `ns`: `unshare(CLONE_NEWPID|CLONE_NEWNS|CLONE_NEWNET|CLONE_NEWIPC|CLONE_NEWUTS)`,
//!   then spawn the `init` stage, which is pid 1 of the new pid namespace: it
//!   makes `/` recursively private, mounts a fresh `/proc`, brings `lo` up (best
//!   effort, with `ip`), calls `setsid()` and execs the test. The launcher writes
//!   the test's pid as the harness sees it to `--pid-out`, waits for it and exits
//!   with its status. The harness dumps the test (the namespace's init), so the
//!   whole namespace is dumped.
//! - `uns`: the same inside a new user namespace. Mapping all ids (`0 0 4294967295`)
//!   needs CAP_SETUID in the *parent* user namespace, which a process that has just
//!   unshared no longer has, so the launcher spawns a `userns` stage that unshares
//!   the user namespace and waits on its stdin while the launcher writes its
//!   uid_map and gid_map; that stage then continues like `ns`.

use crate::descriptor::Flavor;
use anyhow::{bail, Context, Result};
use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The hidden subcommand name.
pub const SUBCOMMAND: &str = "__launch";

/// Stages of the launcher (the harness starts `outer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Stage {
    Outer,
    Userns,
    Init,
}

/// Arguments of `cargo-zdtm __launch`.
#[derive(Debug, Clone, clap::Args)]
pub struct LaunchArgs {
    #[arg(long)]
    pub flavor: Flavor,
    #[arg(long, value_enum, default_value = "outer")]
    pub stage: Stage,
    /// Where to write the test's pid as seen from outside (ns, uns).
    #[arg(long)]
    pub pid_out: Option<PathBuf>,
    /// The test command line.
    #[arg(last = true, required = true)]
    pub command: Vec<OsString>,
}

/// The launcher command line the harness runs for `command` in `flavor`.
pub fn command_line(
    launcher: &Path,
    flavor: Flavor,
    pid_out: Option<&Path>,
    command: &[OsString],
) -> Command {
    let mut c = Command::new(launcher);
    c.arg(SUBCOMMAND).arg(format!("--flavor={flavor}"));
    if let Some(p) = pid_out {
        c.arg("--pid-out").arg(p);
    }
    c.arg("--").args(command);
    c
}

const NS_FLAGS: CloneFlags = CloneFlags::CLONE_NEWPID
    .union(CloneFlags::CLONE_NEWNS)
    .union(CloneFlags::CLONE_NEWNET)
    .union(CloneFlags::CLONE_NEWIPC)
    .union(CloneFlags::CLONE_NEWUTS);

/// Runs the launcher; returns only on error (otherwise it execs or exits).
pub fn main(args: LaunchArgs) -> Result<std::convert::Infallible> {
    match (args.flavor, args.stage) {
        (Flavor::Host, _) => {
            nix::unistd::setsid().context("setsid")?;
            Err(exec(&args.command))
        }
        (Flavor::Ns, Stage::Outer) => {
            unshare(NS_FLAGS).context("unshare namespaces")?;
            spawn_init_and_wait(&args)
        }
        (Flavor::Uns, Stage::Outer) => map_user_ns(&args),
        (Flavor::Uns, Stage::Userns) => {
            unshare(CloneFlags::CLONE_NEWUSER).context("unshare user namespace")?;
            // The outer stage writes our id maps, then writes one byte.
            let mut b = [0u8; 1];
            std::io::stdin()
                .read_exact(&mut b)
                .context("waiting for the id maps")?;
            unshare(NS_FLAGS).context("unshare namespaces")?;
            spawn_init_and_wait(&args)
        }
        (_, Stage::Init) => {
            init_stage()?;
            Err(exec(&args.command))
        }
        (f, s) => bail!("launcher: stage {s:?} does not apply to flavor {f}"),
    }
}

fn exec(command: &[OsString]) -> anyhow::Error {
    let Some((prog, rest)) = command.split_first() else {
        return anyhow::anyhow!("launcher: empty command");
    };
    // Descriptors the harness inherited (from whatever started it) must not leak into the
    // test: they would be part of the dumped tree, leading outside it.
    engine::close_inherited_fds_on_exec();
    let err = Command::new(prog).args(rest).exec();
    anyhow::Error::new(err).context(format!("exec {}", Path::new(prog).display()))
}

fn self_exe() -> Result<PathBuf> {
    std::env::current_exe().context("cannot find the launcher executable")
}

/// Spawns the `init` stage (pid 1 of the new pid namespace), publishes its pid,
/// waits for it and exits with its status.
fn spawn_init_and_wait(args: &LaunchArgs) -> Result<std::convert::Infallible> {
    let mut child = Command::new(self_exe()?)
        .arg(SUBCOMMAND)
        .arg(format!("--flavor={}", args.flavor))
        .arg("--stage=init")
        .arg("--")
        .args(&args.command)
        .stdin(Stdio::null())
        .spawn()
        .context("spawn the namespace init")?;
    if let Some(p) = &args.pid_out {
        write_atomic(p, &format!("{}\n", child.id()))?;
    }
    let st = child.wait().context("wait for the namespace init")?;
    std::process::exit(exit_code(st));
}

fn exit_code(st: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0))
}

fn write_atomic(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("rename to {}", path.display()))
}

/// Outer stage of `uns`: spawn the `userns` stage, map its ids, let it go on.
fn map_user_ns(args: &LaunchArgs) -> Result<std::convert::Infallible> {
    let mut cmd = Command::new(self_exe()?);
    cmd.arg(SUBCOMMAND)
        .arg(format!("--flavor={}", args.flavor))
        .arg("--stage=userns");
    if let Some(p) = &args.pid_out {
        cmd.arg("--pid-out").arg(p);
    }
    let mut child = cmd
        .arg("--")
        .args(&args.command)
        .stdin(Stdio::piped())
        .spawn()
        .context("spawn the user namespace stage")?;
    let pid = child.id();
    let own = std::fs::read_link("/proc/self/ns/user").context("read /proc/self/ns/user")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match std::fs::read_link(format!("/proc/{pid}/ns/user")) {
            Ok(ns) if ns != own => break,
            _ if Instant::now() > deadline => {
                bail!("stage {pid} did not unshare its user namespace")
            }
            _ => std::thread::sleep(Duration::from_millis(1)),
        }
        if let Some(st) = child.try_wait()? {
            std::process::exit(exit_code(st));
        }
    }
    for (file, map) in [
        ("uid_map", "0 0 4294967295\n"),
        ("gid_map", "0 0 4294967295\n"),
    ] {
        let path = format!("/proc/{pid}/{file}");
        std::fs::write(&path, map).with_context(|| format!("write {path}"))?;
    }
    let mut stdin = child.stdin.take().context("stage stdin")?;
    stdin
        .write_all(b"g")
        .context("release the user namespace stage")?;
    drop(stdin);
    let st = child.wait().context("wait for the user namespace stage")?;
    std::process::exit(exit_code(st));
}

/// pid 1 of the new namespaces: private mounts, own /proc, lo up, own session.
fn init_stage() -> Result<()> {
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .context("make / private")?;
    mount(
        Some("proc"),
        "/proc",
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .context("mount /proc")?;
    // Loopback is down in a new network namespace; tests using 127.0.0.1 need it.
    let _ = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    nix::unistd::setsid().context("setsid")?;
    Ok(())
}
