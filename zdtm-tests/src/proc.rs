//! Small readers for `/proc/self` files.

use std::path::PathBuf;

/// Why a `/proc` value could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    /// Reading the file failed.
    #[error("reading {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file lacks the field.
    #[error("{path}: no field {field}")]
    Missing {
        /// The file.
        path: PathBuf,
        /// The field asked for.
        field: String,
    },
    /// The field's value has an unexpected format.
    #[error("{path}: field {field}: cannot parse {value:?}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The field.
        field: String,
        /// Its text.
        value: String,
    },
}

fn read(path: &str) -> Result<String, ProcError> {
    std::fs::read_to_string(path).map_err(|source| ProcError::Read {
        path: PathBuf::from(path),
        source,
    })
}

/// Reads a whole `/proc` file as bytes.
pub fn read_bytes(path: &str) -> Result<Vec<u8>, ProcError> {
    std::fs::read(path).map_err(|source| ProcError::Read {
        path: PathBuf::from(path),
        source,
    })
}

/// The value of `field` in `/proc/self/status` text, trimmed.
pub fn status_field_in(text: &str, field: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k == field).then(|| v.trim().to_string())
    })
}

/// The value of `field` (e.g. `SigBlk`) in `/proc/self/status`.
pub fn status_field(field: &str) -> Result<String, ProcError> {
    let path = "/proc/self/status";
    let text = read(path)?;
    status_field_in(&text, field).ok_or_else(|| ProcError::Missing {
        path: PathBuf::from(path),
        field: field.to_string(),
    })
}

/// A hexadecimal mask field of `/proc/self/status` (`SigBlk`, `SigIgn`,
/// `SigCgt`, `SigPnd`, `ShdPnd`).
pub fn status_hex(field: &str) -> Result<u64, ProcError> {
    let v = status_field(field)?;
    u64::from_str_radix(&v, 16).map_err(|_| ProcError::Parse {
        path: PathBuf::from("/proc/self/status"),
        field: field.to_string(),
        value: v,
    })
}

/// Field `n` (1-based, as numbered in proc(5)) of `/proc/self/stat` text.
/// The command name may contain spaces and parentheses, so fields after it
/// are counted from its last `)`.
pub fn stat_field_in(text: &str, n: usize) -> Option<String> {
    match n {
        0 => None,
        1 => text.split_whitespace().next().map(str::to_string),
        2 => {
            let open = text.find('(')?;
            let close = text.rfind(')')?;
            Some(text.get(open..=close)?.to_string())
        }
        _ => {
            let close = text.rfind(')')?;
            text[close + 1..]
                .split_whitespace()
                .nth(n - 3)
                .map(str::to_string)
        }
    }
}

/// Numeric field `n` (1-based) of `/proc/self/stat`, e.g. 47 `start_brk`,
/// 48 `arg_start`, 50 `env_start`, 51 `env_end`.
pub fn stat_u64(n: usize) -> Result<u64, ProcError> {
    let path = "/proc/self/stat";
    let text = read(path)?;
    let v = stat_field_in(&text, n).ok_or_else(|| ProcError::Missing {
        path: PathBuf::from(path),
        field: n.to_string(),
    })?;
    v.parse().map_err(|_| ProcError::Parse {
        path: PathBuf::from(path),
        field: n.to_string(),
        value: v,
    })
}

/// Index of `start_brk` in `/proc/PID/stat`.
pub const STAT_START_BRK: usize = 47;
/// Index of `arg_start` in `/proc/PID/stat`.
pub const STAT_ARG_START: usize = 48;
/// Index of `arg_end` in `/proc/PID/stat`.
pub const STAT_ARG_END: usize = 49;
/// Index of `env_start` in `/proc/PID/stat`.
pub const STAT_ENV_START: usize = 50;
/// Index of `env_end` in `/proc/PID/stat`.
pub const STAT_ENV_END: usize = 51;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_survive_odd_comm() {
        let t = "42 (a) b) c) R 1 2 3";
        assert_eq!(stat_field_in(t, 1).unwrap(), "42");
        assert_eq!(stat_field_in(t, 2).unwrap(), "(a) b) c)");
        assert_eq!(stat_field_in(t, 3).unwrap(), "R");
        assert_eq!(stat_field_in(t, 6).unwrap(), "3");
        assert_eq!(stat_field_in(t, 7), None);
    }

    #[test]
    fn status_fields() {
        let t = "Name:\tx\nSigBlk:\t0000000000010000\n";
        assert_eq!(status_field_in(t, "SigBlk").unwrap(), "0000000000010000");
        assert_eq!(status_field_in(t, "Sig"), None);
        assert!(status_hex("SigCgt").is_ok());
        assert!(matches!(
            status_field("NoSuchField"),
            Err(ProcError::Missing { .. })
        ));
    }

    #[test]
    fn own_env_range_is_sane() {
        let s = stat_u64(STAT_ENV_START).unwrap();
        let e = stat_u64(STAT_ENV_END).unwrap();
        assert!(s > 0 && s <= e);
    }
}
