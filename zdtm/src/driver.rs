//! Driving the engine binary through its CRIU-compatible command line, exactly
//! as a user would: `ENGINE dump -t PID -D DIR -o LOG -v4`, `ENGINE restore -D DIR
//! -d --pidfile FILE -o LOG -v4`, `ENGINE check --feature NAME`. Any compatible
//! binary can be put under test with `--engine PATH`.
//!
//! Each engine run has its own process group, so a timeout kills the engine
//! and any helper it started. Its stdout and stderr go to one file beside the
//! image directory (the engine's `-o` log lives inside it, relative to `-D`).

use crate::process::{self, Exit};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Environment variable naming the fault the engine should inject.
pub const FAULT_ENV: &str = "CRUST_FAULT";

/// The engine under test.
#[derive(Debug)]
pub struct Driver {
    pub path: PathBuf,
    /// Whether this is crust (its images can be round-trip checked).
    pub is_crust: bool,
    /// `--fault NAME`: passed as `CRUST_FAULT=NAME` to dump, restore and friends.
    pub fault: Option<String>,
    features: Mutex<HashMap<String, bool>>,
}

/// What one engine run did, for reports.
#[derive(Debug, Clone)]
pub struct Run {
    /// The step this run belongs to ("dump", "restore"...).
    pub what: String,
    pub argv: Vec<OsString>,
    /// `None`: killed at the deadline.
    pub exit: Option<Exit>,
    pub duration: Duration,
    /// Engine stdout+stderr.
    pub output: PathBuf,
    /// The engine's own log (`-o`), if the command names one.
    pub log: Option<PathBuf>,
}

impl Run {
    pub fn success(&self) -> bool {
        self.exit == Some(Exit::Code(0))
    }

    /// The command line, shell-quoted where needed.
    pub fn command_line(&self) -> String {
        quote_argv(&self.argv)
    }

    pub fn status(&self) -> String {
        match self.exit {
            Some(e) => format!("{e} after {:.2}s", self.duration.as_secs_f64()),
            None => format!(
                "killed at the trial deadline after {:.2}s",
                self.duration.as_secs_f64()
            ),
        }
    }
}

/// Quotes arguments for display so a report's command line can be pasted in a shell.
pub fn quote_argv(argv: &[OsString]) -> String {
    argv.iter()
        .map(|a| {
            let s = a.to_string_lossy();
            if !s.is_empty()
                && s.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&c))
            {
                s.into_owned()
            } else {
                format!("'{}'", s.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl fmt::Display for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} ({})",
            self.what,
            self.command_line(),
            self.status()
        )
    }
}

/// Failures to run the engine at all (not: the engine reported an error).
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("cannot run engine {}", path.display())]
    Spawn {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create engine output file {}", path.display())]
    Output {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("waiting for engine {}", path.display())]
    Wait {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Driver {
    pub fn new(path: PathBuf, is_crust: bool, fault: Option<String>) -> Self {
        Driver {
            path,
            is_crust,
            fault,
            features: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `ENGINE check --feature NAME` exits 0. Answers are cached for the run.
    pub fn has_feature(&self, name: &str) -> Result<bool, DriverError> {
        if let Some(&v) = self.lock_features().get(name) {
            return Ok(v);
        }
        let mut child = Command::new(&self.path)
            .args(["check", "--feature", name])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|source| DriverError::Spawn {
                path: self.path.clone(),
                source,
            })?;
        let deadline = Instant::now() + Duration::from_secs(60);
        let st = process::wait_child(&mut child, deadline).map_err(|source| DriverError::Wait {
            path: self.path.clone(),
            source,
        })?;
        let present = match st {
            Some(st) => st.success(),
            None => {
                let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
                let _ = child.wait();
                false
            }
        };
        self.lock_features().insert(name.to_string(), present);
        Ok(present)
    }

    fn lock_features(&self) -> std::sync::MutexGuard<'_, HashMap<String, bool>> {
        self.features.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `ENGINE args...` in `cwd` until it exits or `deadline` passes (then its
    /// process group is killed). Output goes to `output`.
    pub fn run(
        &self,
        what: &str,
        args: &[OsString],
        cwd: &Path,
        output: &Path,
        log: Option<PathBuf>,
        deadline: Instant,
    ) -> Result<Run, DriverError> {
        self.run_with_fault(
            what,
            args,
            cwd,
            output,
            log,
            deadline,
            self.fault.as_deref(),
        )
    }

    /// [`Driver::run`] injecting `fault` (or none) instead of the run's `--fault`.
    #[allow(clippy::too_many_arguments)]
    pub fn run_with_fault(
        &self,
        what: &str,
        args: &[OsString],
        cwd: &Path,
        output: &Path,
        log: Option<PathBuf>,
        deadline: Instant,
        fault: Option<&str>,
    ) -> Result<Run, DriverError> {
        let out = std::fs::File::create(output).map_err(|source| DriverError::Output {
            path: output.to_path_buf(),
            source,
        })?;
        let err = out.try_clone().map_err(|source| DriverError::Output {
            path: output.to_path_buf(),
            source,
        })?;
        let mut cmd = Command::new(&self.path);
        cmd.args(args)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        if let Some(f) = fault {
            cmd.env(FAULT_ENV, f);
        }
        let mut argv = vec![self.path.clone().into_os_string()];
        argv.extend(args.iter().cloned());
        let start = Instant::now();
        let mut child = cmd.spawn().map_err(|source| DriverError::Spawn {
            path: self.path.clone(),
            source,
        })?;
        let st = process::wait_child(&mut child, deadline).map_err(|source| DriverError::Wait {
            path: self.path.clone(),
            source,
        })?;
        let exit = match st {
            Some(st) => Some(Exit::from(st)),
            None => {
                let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
                let _ = child.wait();
                None
            }
        };
        Ok(Run {
            what: what.to_string(),
            argv,
            exit,
            duration: start.elapsed(),
            output: output.to_path_buf(),
            log,
        })
    }
}

/// Builds an argument vector from mixed string-ish pieces.
#[macro_export]
macro_rules! os_args {
    ($($a:expr),* $(,)?) => {{
        let v: Vec<std::ffi::OsString> = vec![$(std::ffi::OsString::from($a)),*];
        v
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        let argv = os_args!["/bin/crust", "dump", "-D", "/tmp/a b", "it's"];
        assert_eq!(
            quote_argv(&argv),
            r"/bin/crust dump -D '/tmp/a b' 'it'\''s'"
        );
    }

    #[test]
    fn run_times_out_and_kills_the_group() {
        let dir = tempfile::tempdir().unwrap();
        let d = Driver::new("/bin/sh".into(), false, Some("boom".into()));
        let out = dir.path().join("out");
        let r = d
            .run(
                "dump",
                &os_args!["-c", "echo $CRUST_FAULT; sleep 30 & sleep 30"],
                dir.path(),
                &out,
                None,
                Instant::now() + Duration::from_millis(300),
            )
            .unwrap();
        assert_eq!(r.exit, None);
        assert!(r.status().contains("deadline"));
        assert!(r.duration < Duration::from_secs(10));
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "boom\n");
    }

    #[test]
    fn features_are_asked_and_cached() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("eng");
        let count = dir.path().join("count");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\necho x >> {}\n[ \"$1 $2 $3\" = 'check --feature yes' ]\n",
                count.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let d = Driver::new(script, false, None);
        assert!(d.has_feature("yes").unwrap());
        assert!(!d.has_feature("no").unwrap());
        assert!(d.has_feature("yes").unwrap());
        assert_eq!(std::fs::read_to_string(&count).unwrap().lines().count(), 2);
        let missing = Driver::new("/nonexistent/crust".into(), true, None);
        assert!(matches!(
            missing.has_feature("x"),
            Err(DriverError::Spawn { .. })
        ));
    }
}
