//! `crust`: checkpoint/restore in userspace, with a CRIU-compatible command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "crust",
    version,
    about = "Checkpoint/restore of Linux process trees"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone)]
struct Common {
    /// Image directory.
    #[arg(short = 'D', long = "images-dir", default_value = ".")]
    images_dir: PathBuf,
    /// Log file; relative paths are inside the image directory.
    #[arg(short = 'o', long = "log-file")]
    log_file: Option<PathBuf>,
    /// Verbosity 0..4, as `-v4` or `-v -v`.
    #[arg(short = 'v', num_args = 0..=1, default_missing_value = "4", value_parser = clap::value_parser!(u8).range(0..=4))]
    verbosity: Option<u8>,
    /// The tree is a shell job: its session and terminal are outside the tree; restore puts
    /// it on crust's own terminal.
    #[arg(short = 'j', long = "shell-job")]
    shell_job: bool,
    /// Dump file locks (flock, OFD and POSIX record locks, leases); at restore, take them
    /// again (without it they are left out, as CRIU does).
    #[arg(short = 'l', long = "file-locks")]
    file_locks: bool,
}

/// Incremental dumps.
#[derive(Args, Clone)]
struct MemArgs {
    /// The images of the previous (pre-)dump, relative to the images dir: pages unchanged
    /// since are not stored again.
    #[arg(long = "prev-images-dir", value_name = "DIR")]
    prev_images_dir: Option<PathBuf>,
    /// Track memory changes for a later incremental dump (pre-dump always does; a dump only
    /// with --leave-running).
    #[arg(long = "track-mem")]
    track_mem: bool,
}

#[derive(Subcommand)]
enum Cmd {
    /// Checkpoint the tree rooted at PID.
    Dump {
        /// Root of the tree to dump.
        #[arg(short = 't', long = "tree")]
        pid: i32,
        /// Resume the tree after dumping instead of killing it.
        #[arg(short = 'R', long = "leave-running")]
        leave_running: bool,
        /// Largest unlinked open file whose contents are saved (bytes, or with K, M, G).
        #[arg(long = "ghost-limit", value_parser = parse_size)]
        ghost_limit: Option<u64>,
        /// An object outside the tree that it may use: `pipe[INO]` (a pipe another process
        /// also holds; restore it with --inherit-fd).
        #[arg(long = "external", value_name = "KEY")]
        external: Vec<String>,
        /// Link open files that lost their name back under a hidden name beside the old one
        /// (link_remap.N, removed by the restore) instead of saving their contents.
        #[arg(long = "link-remap")]
        link_remap: bool,
        #[command(flatten)]
        mem: MemArgs,
        #[command(flatten)]
        common: Common,
    },
    /// Copy the memory of the tree rooted at PID while it keeps running, and track what it
    /// writes from now on, so that a later `dump --prev-images-dir` is short.
    PreDump {
        /// Root of the tree to pre-dump.
        #[arg(short = 't', long = "tree")]
        pid: i32,
        #[command(flatten)]
        mem: MemArgs,
        #[command(flatten)]
        common: Common,
    },
    /// Restore a tree from its images.
    Restore {
        /// Detach once the tree runs instead of waiting for it.
        #[arg(short = 'd', long = "restore-detached")]
        detach: bool,
        /// Write the restored root's pid here.
        #[arg(long)]
        pidfile: Option<PathBuf>,
        /// `fd[N]:KEY`: use crust's own fd N for the object KEY (`pipe:[INO]`, or a file's
        /// path), as for a pipe dumped with --external.
        #[arg(long = "inherit-fd", value_name = "fd[N]:KEY")]
        inherit_fd: Vec<String>,
        /// Restore files even if their size, mtime or ELF build-id changed since the dump.
        #[arg(long = "skip-file-validation")]
        skip_file_validation: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Report the kernel features crust relies on.
    Check {
        /// Check one feature only: exit 0 if present, 1 if missing.
        #[arg(long)]
        feature: Option<String>,
        /// Also list optional capabilities.
        #[arg(long)]
        all: bool,
    },
}

fn setup_log(c: &Common) -> anyhow::Result<()> {
    let level = c.verbosity.unwrap_or(2);
    let path = c.log_file.as_ref().map(|p| {
        if p.is_absolute() {
            p.clone()
        } else {
            c.images_dir.join(p)
        }
    });
    if let Some(p) = &path {
        if let Some(parent) = p.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
    }
    engine::log::init(path.as_deref(), level)
        .map_err(|e| anyhow::anyhow!("log file {}: {e}", path.unwrap_or_default().display()))
}

/// The whole chain of causes on one line.
fn one_line(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// A size in bytes, with an optional K, M or G suffix (powers of 1024), as CRIU takes them.
fn parse_size(s: &str) -> Result<u64, String> {
    let (num, shift) = match s.as_bytes().last() {
        Some(b'K' | b'k') => (&s[..s.len() - 1], 10),
        Some(b'M' | b'm') => (&s[..s.len() - 1], 20),
        Some(b'G' | b'g') => (&s[..s.len() - 1], 30),
        _ => (s, 0),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or_else(|| format!("{s:?} is not a size (a number of bytes, or with K, M, G)"))
}

fn write_pidfile(path: &Path, pid: i32) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{pid}\n"))
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| anyhow::anyhow!("pidfile {}: {e}", path.display()))
}

fn main() -> ExitCode {
    // Restored children may hold many fds: use the whole of our own fd allowance.
    if let Ok((_, hard)) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
    {
        let _ =
            nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard);
    }
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("crust: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.cmd {
        Cmd::Dump {
            pid,
            leave_running,
            ghost_limit,
            external,
            link_remap,
            mem,
            common,
        } => {
            std::fs::create_dir_all(&common.images_dir)
                .map_err(|e| anyhow::anyhow!("images dir {}: {e}", common.images_dir.display()))?;
            setup_log(&common)?;
            let opts = engine::DumpOpts {
                pid,
                images_dir: common.images_dir.clone(),
                leave_running,
                shell_job: common.shell_job,
                ghost_limit,
                external,
                file_locks: common.file_locks,
                link_remap,
                prev_images_dir: mem.prev_images_dir,
                track_mem: mem.track_mem,
            };
            engine::dump(&opts).map_err(|e| anyhow::anyhow!("dump: {}", one_line(&e)))?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::PreDump { pid, mem, common } => {
            std::fs::create_dir_all(&common.images_dir)
                .map_err(|e| anyhow::anyhow!("images dir {}: {e}", common.images_dir.display()))?;
            setup_log(&common)?;
            let opts = engine::PreDumpOpts {
                pid,
                images_dir: common.images_dir.clone(),
                prev_images_dir: mem.prev_images_dir,
            };
            engine::pre_dump(&opts).map_err(|e| anyhow::anyhow!("pre-dump: {}", one_line(&e)))?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Restore {
            detach,
            pidfile,
            inherit_fd,
            skip_file_validation,
            common,
        } => {
            if !common.images_dir.is_dir() {
                anyhow::bail!(
                    "restore: images dir {}: not a directory",
                    common.images_dir.display()
                );
            }
            setup_log(&common)?;
            let opts = engine::RestoreOpts {
                images_dir: common.images_dir.clone(),
                shell_job: common.shell_job,
                inherit_fds: inherit_fd,
                skip_file_validation,
                file_locks: common.file_locks,
            };
            let r =
                engine::restore(&opts).map_err(|e| anyhow::anyhow!("restore: {}", one_line(&e)))?;
            if let Some(p) = pidfile {
                write_pidfile(&p, r.root_pid)?;
            }
            if detach {
                return Ok(ExitCode::SUCCESS);
            }
            let code = engine::restore::wait_for(r.root_pid)
                .map_err(|e| anyhow::anyhow!("waiting for pid {}: {e}", r.root_pid))?;
            Ok(ExitCode::from(code.clamp(0, 255) as u8))
        }
        Cmd::Check { feature, all } => {
            let feats = engine::check::features();
            if let Some(name) = feature {
                return match feats.iter().find(|f| f.name == name) {
                    Some(f) => Ok(if f.present.is_ok() {
                        println!("{name}: ok");
                        ExitCode::SUCCESS
                    } else {
                        println!("{name}: missing");
                        ExitCode::from(1)
                    }),
                    None => {
                        eprintln!("crust: check: unknown feature {name:?}");
                        Ok(ExitCode::from(2))
                    }
                };
            }
            let mut ok = true;
            for f in feats.iter().filter(|f| all || f.required) {
                match &f.present {
                    Ok(()) => println!("{}: ok ({})", f.name, f.what),
                    Err(why) => {
                        ok &= !f.required;
                        println!("{}: missing: {why} ({})", f.name, f.what)
                    }
                }
            }
            if ok {
                println!("Looks good.");
                Ok(ExitCode::SUCCESS)
            } else {
                Ok(ExitCode::from(1))
            }
        }
    }
}
