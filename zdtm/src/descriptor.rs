//! Test descriptors: the YAML file beside each test program.
//!
//! The schema is closed: an unknown key, group, flavor, flag, feature or
//! allowed-diff field is an error naming the file and suggesting the closest valid
//! word. Validation runs on the raw YAML tree first (so the error can name the
//! word and the key it appeared under), then serde deserializes the checked tree
//! into [`Descriptor`] with `deny_unknown_fields` as a second fence.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};

/// A closed vocabulary: what its words are called and the words.
#[derive(Debug)]
pub struct Vocab {
    pub what: &'static str,
    pub words: &'static [&'static str],
}

/// Top-level keys.
pub static KEY_VOCAB: Vocab = Vocab {
    what: "key",
    words: KEYS,
};
/// Keys of an `allow_diff` entry.
pub static ALLOW_DIFF_KEY_VOCAB: Vocab = Vocab {
    what: "key",
    words: ALLOW_DIFF_KEYS,
};
/// Fields of the inspection an `allow_diff` entry may name.
pub static FIELD_VOCAB: Vocab = Vocab {
    what: "field",
    words: engine::inspect::FIELDS,
};

/// Declares a closed vocabulary: an enum whose variants have one spelling each,
/// with the list of spellings for validation and suggestions.
macro_rules! closed_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident : $what:literal {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];
            /// Every spelling, in declaration order.
            pub const NAMES: &'static [&'static str] = &[$($text,)+];
            /// What a value of this type is called in error messages.
            pub const WHAT: &'static str = $what;
            /// The vocabulary, for validation.
            pub const VOCAB: Vocab = Vocab { what: $what, words: Self::NAMES };

            /// The spelling used in descriptors and on the command line.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text,)+ }
            }

            /// The value spelled `s`, if any.
            pub fn from_name(s: &str) -> Option<Self> {
                match s { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                $name::from_name(s).ok_or_else(|| {
                    format!("unknown {} `{}`{}", $what, s, hint(&suggest(s, $name::NAMES), $name::NAMES))
                })
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

closed_enum! {
    /// What kind of kernel object a test is about; used to group the summary.
    pub enum Group: "group" {
        Memory = "memory",
        Files = "files",
        Signals = "signals",
        Process = "process",
        Fpu = "fpu",
        Fs = "fs",
        Ipc = "ipc",
        Sockets = "sockets",
        Namespaces = "namespaces",
        Timers = "timers",
        Tty = "tty",
        Misc = "misc",
    }
}

closed_enum! {
    /// Where a trial runs.
    pub enum Flavor: "flavor" {
        /// On the host, in the harness's namespaces.
        Host = "h",
        /// As init of fresh pid, mount, net, ipc and uts namespaces.
        Ns = "ns",
        /// Like `ns`, inside a fresh user namespace too.
        Uns = "uns",
    }
}

closed_enum! {
    /// Flags changing how a test is scheduled or judged.
    pub enum Flag: "flag" {
        /// Runs alone: no other trial runs at the same time.
        Excl = "excl",
        /// Runs only when named exactly or with --ignored/--include-ignored.
        Noauto = "noauto",
        /// Dump or restore is expected to fail; if both succeed the trial fails.
        Crfail = "crfail",
        /// Needs root; ignored when the harness does not run as root.
        Suid = "suid",
        /// Needs a restore: ignored with --norst.
        Reqrst = "reqrst",
        /// Never runs in the `uns` flavor.
        Nouns = "nouns",
    }
}

closed_enum! {
    /// Engine capabilities a test needs, asked with `ENGINE check --feature NAME`.
    /// New names are added here when the engine learns to report them.
    pub enum Feature: "feature" {
        PreDump = "pre-dump",
        Snapshots = "snapshots",
        PageServer = "page-server",
        LazyPages = "lazy-pages",
        NsFlavor = "ns-flavor",
        UnsFlavor = "uns-flavor",
        Threads = "threads",
        Rseq = "rseq",
        Seccomp = "seccomp",
        Memfd = "memfd",
        Eventfd = "eventfd",
        Signalfd = "signalfd",
        Timerfd = "timerfd",
        Epoll = "epoll",
        Inotify = "inotify",
        Fanotify = "fanotify",
        UnixSockets = "unix-sockets",
        InetSockets = "inet-sockets",
        TcpEstablished = "tcp-established",
        Netlink = "netlink",
        PacketSockets = "packet-sockets",
        Tun = "tun",
        SysvIpc = "sysv-ipc",
        PosixMqueue = "posix-mqueue",
        Tty = "tty",
        Pidfd = "pidfd",
        IoUring = "io-uring",
        Userfaultfd = "userfaultfd",
        TimeNs = "time-ns",
        Cgroups = "cgroups",
        PosixTimers = "posix-timers",
        FileLocks = "file-locks",
        Ptrace = "ptrace",
    }
}

/// Valid top-level keys of a descriptor.
pub const KEYS: &[&str] = &[
    "description",
    "group",
    "flavors",
    "flags",
    "features",
    "args",
    "timeout",
    "dump_opts",
    "restore_opts",
    "allow_diff",
    "exec",
    "locks",
];

/// Valid keys of one `allow_diff` entry.
pub const ALLOW_DIFF_KEYS: &[&str] = &["field", "reason"];

/// Timeout of a trial when the descriptor names none, in seconds.
pub const DEFAULT_TIMEOUT: u64 = 30;

/// A test descriptor: `<name>.yaml` beside `<name>.rs`.
///
/// ```yaml
/// description: one line saying what state must survive   # required
/// group: memory        # required: memory|files|signals|process|fpu|fs|ipc|sockets|
///                      #           namespaces|timers|tty|misc
/// flavors: [h, ns, uns]  # where it runs; default all three
/// flags: []            # excl | noauto | crfail | suid | reqrst | nouns
/// features: []         # engine features needed (`ENGINE check --feature NAME`)
/// args: []             # extra arguments after --pidfile=P --outfile=O
/// timeout: 30          # seconds for the whole trial
/// dump_opts: []        # extra options for `ENGINE dump`
/// restore_opts: []     # extra options for `ENGINE restore`
/// allow_diff:          # expected differences in the inspect comparison
///   - { field: fds.pos, reason: "the test reads while being dumped" }
/// exec: ../helpers/x.py  # run this executable instead of the test binary
/// locks: []            # named locks held for the whole trial
/// ```
///
/// Keys:
/// - `description`: one line, required.
/// - `group`: required; groups the summary table.
/// - `flavors`: `h` (host), `ns` (init of fresh pid+mount+net+ipc+uts namespaces),
///   `uns` (the same plus a user namespace). Default: all three.
/// - `flags`: `excl` runs alone (the pool drains first); `noauto` runs only when
///   named exactly or with `--ignored`/`--include-ignored`; `crfail` expects dump or
///   restore to fail (both succeeding fails the trial); `suid` needs root (ignored
///   otherwise); `reqrst` needs a restore after every dump (ignored under `--norst` and
///   `--snaps`, whose dumps leave the tree running); `nouns` never
///   runs in `uns`.
/// - `features`: each is checked with `ENGINE check --feature NAME` (exit 0 means
///   present); a missing one makes the trial ignored with that reason, or failed
///   under `--require-all`.
/// - `args`: passed after `--pidfile=P --outfile=O`.
/// - `timeout`: seconds for the whole trial, all steps; on expiry the test tree is
///   killed and the trial fails. Default 30.
/// - `dump_opts`, `restore_opts`: appended to the engine command lines.
/// - `allow_diff`: differences of the before/after inspection that are expected,
///   each with a `field` (a name from `engine::inspect::FIELDS`; a parent name
///   such as `fds` covers `fds.pos`) and a `reason`.
/// - `exec`: path (relative to the descriptor's directory) of an executable to run
///   instead of the Rust binary, so tests can be written in any language.
/// - `locks`: names of kernel-global resources the test uses; trials sharing a
///   name never run at the same time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Descriptor {
    pub description: String,
    pub group: Group,
    #[serde(default = "all_flavors")]
    pub flavors: Vec<Flavor>,
    #[serde(default)]
    pub flags: Vec<Flag>,
    #[serde(default)]
    pub features: Vec<Feature>,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default = "default_timeout")]
    pub timeout: u64,
    #[serde(default)]
    pub dump_opts: Vec<String>,
    #[serde(default)]
    pub restore_opts: Vec<String>,
    #[serde(default)]
    pub allow_diff: Vec<AllowDiff>,
    #[serde(default)]
    pub exec: Option<PathBuf>,
    #[serde(default)]
    pub locks: Vec<String>,
}

/// An expected difference between the inspection before dump and after restore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowDiff {
    /// A name from `engine::inspect::FIELDS`.
    pub field: String,
    /// Why the difference is expected.
    pub reason: String,
}

fn all_flavors() -> Vec<Flavor> {
    Flavor::ALL.to_vec()
}

fn default_timeout() -> u64 {
    DEFAULT_TIMEOUT
}

impl Default for Descriptor {
    /// What a test without a descriptor gets: group `misc`, every flavor, no flags,
    /// no features, the default timeout.
    fn default() -> Self {
        Descriptor {
            description: String::from("(no descriptor)"),
            group: Group::Misc,
            flavors: all_flavors(),
            flags: Vec::new(),
            features: Vec::new(),
            args: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            dump_opts: Vec::new(),
            restore_opts: Vec::new(),
            allow_diff: Vec::new(),
            exec: None,
            locks: Vec::new(),
        }
    }
}

impl Descriptor {
    /// Whether the descriptor carries `flag`.
    pub fn has(&self, flag: Flag) -> bool {
        self.flags.contains(&flag)
    }

    /// Whether the test runs in `flavor` (listed, and not excluded by `nouns`).
    pub fn runs_in(&self, flavor: Flavor) -> bool {
        self.flavors.contains(&flavor) && !(flavor == Flavor::Uns && self.has(Flag::Nouns))
    }

    /// Reads and validates the descriptor at `path`.
    pub fn load(path: &Path) -> Result<Descriptor, DescriptorError> {
        let text = std::fs::read_to_string(path).map_err(|source| DescriptorError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Descriptor::parse(path, &text)
    }

    /// Validates `text` as the descriptor `path` (the path is only used in errors).
    pub fn parse(path: &Path, text: &str) -> Result<Descriptor, DescriptorError> {
        let value: serde_yaml::Value =
            serde_yaml::from_str(text).map_err(|source| DescriptorError::Yaml {
                path: path.to_path_buf(),
                source,
            })?;
        check_tree(path, &value)?;
        let d: Descriptor =
            serde_yaml::from_value(value).map_err(|e| DescriptorError::Invalid {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        d.check(path)?;
        Ok(d)
    }

    fn check(&self, path: &Path) -> Result<(), DescriptorError> {
        let invalid = |message: String| DescriptorError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        if self.description.trim().is_empty() {
            return Err(invalid("`description` is empty".into()));
        }
        if self.description.contains('\n') {
            return Err(invalid("`description` must be one line".into()));
        }
        if self.timeout == 0 {
            return Err(invalid("`timeout` must be at least 1 second".into()));
        }
        if self.flavors.is_empty() {
            return Err(invalid(
                "`flavors` is empty: the test would never run (use the noauto flag instead)".into(),
            ));
        }
        for a in &self.allow_diff {
            if a.reason.trim().is_empty() {
                return Err(invalid(format!(
                    "`allow_diff` entry for `{}` has an empty reason",
                    a.field
                )));
            }
        }
        if let Some(exec) = &self.exec {
            if exec.as_os_str().is_empty() {
                return Err(invalid("`exec` is empty".into()));
            }
        }
        if self.locks.iter().any(|l| l.trim().is_empty()) {
            return Err(invalid("`locks` holds an empty name".into()));
        }
        Ok(())
    }
}

/// Why a descriptor was rejected. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum DescriptorError {
    #[error("{}: cannot read descriptor", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not valid YAML{}", path.display(), yaml_location(source))]
    Yaml {
        path: PathBuf,
        #[source]
        source: serde_yaml::Error,
    },
    /// A key that the schema does not have, at `at` (`allow_diff[1]` or top level).
    #[error("{}: unknown key `{key}`{}{}", path.display(), at_suffix(at), hint(suggestion, vocab.words))]
    UnknownKey {
        path: PathBuf,
        at: Option<String>,
        key: String,
        suggestion: Option<String>,
        vocab: &'static Vocab,
    },
    /// A value outside a closed vocabulary (`what` is "flag", "group"...).
    #[error("{}: unknown {} `{value}` in `{key}`{}", path.display(), vocab.what, hint(suggestion, vocab.words))]
    UnknownValue {
        path: PathBuf,
        key: String,
        value: String,
        suggestion: Option<String>,
        vocab: &'static Vocab,
    },
    /// Wrong shape or missing required key.
    #[error("{}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
}

impl DescriptorError {
    /// The descriptor file concerned.
    pub fn path(&self) -> &Path {
        match self {
            DescriptorError::Io { path, .. }
            | DescriptorError::Yaml { path, .. }
            | DescriptorError::UnknownKey { path, .. }
            | DescriptorError::UnknownValue { path, .. }
            | DescriptorError::Invalid { path, .. } => path,
        }
    }
}

fn yaml_location(e: &serde_yaml::Error) -> String {
    match e.location() {
        Some(l) => format!(" at line {} column {}: {e}", l.line(), l.column()),
        None => format!(": {e}"),
    }
}

fn at_suffix(at: &Option<String>) -> String {
    match at {
        Some(at) => format!(" in `{at}`"),
        None => String::new(),
    }
}

/// " (did you mean `x`? valid: a, b, c)"
fn hint(suggestion: &Option<String>, valid: &[&str]) -> String {
    match suggestion {
        Some(s) => format!(" (did you mean `{s}`? valid: {})", valid.join(", ")),
        None => format!(" (valid: {})", valid.join(", ")),
    }
}

/// The valid word closest to `word`, if it is close enough to be a plausible typo.
pub fn suggest(word: &str, valid: &[&str]) -> Option<String> {
    let lower = word.to_ascii_lowercase();
    valid
        .iter()
        .map(|v| {
            (
                strsim::damerau_levenshtein(&lower, v),
                strsim::jaro_winkler(&lower, v),
                *v,
            )
        })
        .filter(|(dist, jw, v)| *dist <= (v.len().max(lower.len()) / 2).max(1) || *jw >= 0.8)
        .min_by(|a, b| a.0.cmp(&b.0).then(b.1.total_cmp(&a.1)))
        .map(|(_, _, v)| v.to_string())
}

fn unknown_key(
    path: &Path,
    at: Option<String>,
    key: &str,
    vocab: &'static Vocab,
) -> DescriptorError {
    DescriptorError::UnknownKey {
        path: path.to_path_buf(),
        at,
        key: key.to_string(),
        suggestion: suggest(key, vocab.words),
        vocab,
    }
}

/// Checks keys and closed-vocabulary values on the raw YAML tree.
fn check_tree(path: &Path, value: &serde_yaml::Value) -> Result<(), DescriptorError> {
    use serde_yaml::Value;
    let invalid = |message: String| DescriptorError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let map = match value {
        Value::Mapping(m) => m,
        Value::Null => {
            return Err(invalid(
                "empty descriptor: `description` and `group` are required".into(),
            ))
        }
        _ => {
            return Err(invalid(
                "a descriptor is a mapping of keys to values".into(),
            ))
        }
    };
    for (k, v) in map {
        let Some(key) = k.as_str() else {
            return Err(invalid(format!("key {k:?} is not a string")));
        };
        if !KEYS.contains(&key) {
            return Err(unknown_key(path, None, key, &KEY_VOCAB));
        }
        match key {
            "group" => check_in(path, key, v, &GROUP_VOCAB)?,
            "flavors" => check_list(path, key, v, &FLAVOR_VOCAB)?,
            "flags" => check_list(path, key, v, &FLAG_VOCAB)?,
            "features" => check_list(path, key, v, &FEATURE_VOCAB)?,
            "allow_diff" => check_allow_diff(path, v)?,
            _ => {}
        }
    }
    Ok(())
}

static GROUP_VOCAB: Vocab = Group::VOCAB;
static FLAVOR_VOCAB: Vocab = Flavor::VOCAB;
static FLAG_VOCAB: Vocab = Flag::VOCAB;
static FEATURE_VOCAB: Vocab = Feature::VOCAB;

fn check_in(
    path: &Path,
    key: &str,
    v: &serde_yaml::Value,
    vocab: &'static Vocab,
) -> Result<(), DescriptorError> {
    // Wrong types are left to serde, which says what it expected.
    if let Some(s) = v.as_str() {
        if !vocab.words.contains(&s) {
            return Err(DescriptorError::UnknownValue {
                path: path.to_path_buf(),
                key: key.to_string(),
                value: s.to_string(),
                suggestion: suggest(s, vocab.words),
                vocab,
            });
        }
    }
    Ok(())
}

fn check_list(
    path: &Path,
    key: &str,
    v: &serde_yaml::Value,
    vocab: &'static Vocab,
) -> Result<(), DescriptorError> {
    if let Some(seq) = v.as_sequence() {
        for item in seq {
            check_in(path, key, item, vocab)?;
        }
    }
    Ok(())
}

fn check_allow_diff(path: &Path, v: &serde_yaml::Value) -> Result<(), DescriptorError> {
    let Some(seq) = v.as_sequence() else {
        return Ok(());
    };
    for (i, item) in seq.iter().enumerate() {
        let Some(m) = item.as_mapping() else {
            continue;
        };
        let at = format!("allow_diff[{i}]");
        for (k, v) in m {
            let Some(key) = k.as_str() else { continue };
            if !ALLOW_DIFF_KEYS.contains(&key) {
                return Err(unknown_key(path, Some(at), key, &ALLOW_DIFF_KEY_VOCAB));
            }
            if key == "field" {
                check_in(path, &format!("{at}.field"), v, &FIELD_VOCAB)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Descriptor, DescriptorError> {
        Descriptor::parse(Path::new("static/x.yaml"), text)
    }

    #[test]
    fn full_descriptor() {
        let d = parse(
            "description: all keys
group: memory
flavors: [h, ns]
flags: [excl, crfail]
features: [pre-dump, memfd]
args: [--size=1G]
timeout: 5
dump_opts: [--shell-job]
restore_opts: [--tcp-established]
allow_diff:
  - { field: fds.pos, reason: moves }
exec: helpers/t.py
locks: [loopback]
",
        )
        .unwrap();
        assert_eq!(d.group, Group::Memory);
        assert_eq!(d.flavors, vec![Flavor::Host, Flavor::Ns]);
        assert!(d.has(Flag::Excl) && d.has(Flag::Crfail) && !d.has(Flag::Noauto));
        assert_eq!(d.features, vec![Feature::PreDump, Feature::Memfd]);
        assert_eq!(d.timeout, 5);
        assert_eq!(d.allow_diff[0].field, "fds.pos");
        assert_eq!(d.exec.as_deref(), Some(Path::new("helpers/t.py")));
        assert_eq!(d.locks, vec!["loopback"]);
    }

    #[test]
    fn defaults() {
        let d = parse("description: d\ngroup: misc\n").unwrap();
        assert_eq!(d.flavors, Flavor::ALL);
        assert_eq!(d.timeout, DEFAULT_TIMEOUT);
        assert!(d.flags.is_empty() && d.features.is_empty() && d.exec.is_none());
        let n = Descriptor::default();
        assert_eq!(n.group, Group::Misc);
        assert_eq!(n.flavors, Flavor::ALL);
    }

    #[test]
    fn unknown_key_suggests() {
        let e = parse("description: d\ngroup: misc\nflgs: [excl]\n").unwrap_err();
        match &e {
            DescriptorError::UnknownKey {
                key,
                suggestion,
                at,
                ..
            } => {
                assert_eq!(key, "flgs");
                assert_eq!(suggestion.as_deref(), Some("flags"));
                assert!(at.is_none());
            }
            other => panic!("{other:?}"),
        }
        let msg = e.to_string();
        assert!(
            msg.starts_with("static/x.yaml: unknown key `flgs`"),
            "{msg}"
        );
        assert!(msg.contains("did you mean `flags`?"), "{msg}");
        let e = parse("description: d\ngroup: misc\ntimout: 3\n").unwrap_err();
        assert!(
            matches!(&e, DescriptorError::UnknownKey { suggestion: Some(s), .. } if s == "timeout")
        );
        let e = parse("description: d\ngroup: misc\nrestore_opt: []\n").unwrap_err();
        assert!(
            matches!(&e, DescriptorError::UnknownKey { suggestion: Some(s), .. } if s == "restore_opts")
        );
    }

    #[test]
    fn unknown_key_without_plausible_suggestion_lists_valid() {
        let e = parse("description: d\ngroup: misc\nzzzzzzzzzzzz: 1\n").unwrap_err();
        assert!(
            matches!(
                &e,
                DescriptorError::UnknownKey {
                    suggestion: None,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("valid: description, group"), "{e}");
    }

    #[test]
    fn unknown_values_suggest() {
        let cases = [
            ("group: memroy\n", "group", "memroy", Some("memory")),
            (
                "group: misc\nflags: [exlc]\n",
                "flags",
                "exlc",
                Some("excl"),
            ),
            (
                "group: misc\nflavors: [h, nss]\n",
                "flavors",
                "nss",
                Some("ns"),
            ),
            (
                "group: misc\nfeatures: [predump]\n",
                "features",
                "predump",
                Some("pre-dump"),
            ),
            (
                "group: misc\nallow_diff: [{field: fd, reason: r}]\n",
                "allow_diff[0].field",
                "fd",
                Some("fds"),
            ),
        ];
        for (yaml, want_key, want_value, want_sugg) in cases {
            let e = parse(&format!("description: d\n{yaml}")).unwrap_err();
            match &e {
                DescriptorError::UnknownValue {
                    key,
                    value,
                    suggestion,
                    ..
                } => {
                    assert_eq!(key, want_key, "{yaml}");
                    assert_eq!(value, want_value, "{yaml}");
                    assert_eq!(suggestion.as_deref(), want_sugg, "{yaml}");
                }
                other => panic!("{yaml}: {other:?}"),
            }
            assert!(e.to_string().contains("static/x.yaml"), "{e}");
        }
    }

    #[test]
    fn allow_diff_unknown_key() {
        let e = parse("description: d\ngroup: misc\nallow_diff: [{field: fds, reson: r}]\n")
            .unwrap_err();
        match &e {
            DescriptorError::UnknownKey {
                key,
                at,
                suggestion,
                ..
            } => {
                assert_eq!(key, "reson");
                assert_eq!(at.as_deref(), Some("allow_diff[0]"));
                assert_eq!(suggestion.as_deref(), Some("reason"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn missing_and_malformed() {
        let e = parse("group: misc\n").unwrap_err();
        assert!(
            matches!(&e, DescriptorError::Invalid { message, .. } if message.contains("description")),
            "{e:?}"
        );
        let e = parse("description: d\n").unwrap_err();
        assert!(
            matches!(&e, DescriptorError::Invalid { message, .. } if message.contains("group"))
        );
        let e = parse("").unwrap_err();
        assert!(
            matches!(&e, DescriptorError::Invalid { message, .. } if message.contains("empty"))
        );
        let e = parse("description: d\ngroup: misc\ntimeout: soon\n").unwrap_err();
        assert!(matches!(&e, DescriptorError::Invalid { .. }), "{e:?}");
        let e = parse("description: d\ngroup: misc\ntimeout: 0\n").unwrap_err();
        assert!(
            matches!(&e, DescriptorError::Invalid { message, .. } if message.contains("timeout"))
        );
        let e = parse("description: d\ngroup: misc\nflavors: []\n").unwrap_err();
        assert!(
            matches!(&e, DescriptorError::Invalid { message, .. } if message.contains("flavors"))
        );
        let e = parse("description: \"a\\nb\"\ngroup: misc\n").unwrap_err();
        assert!(
            matches!(&e, DescriptorError::Invalid { message, .. } if message.contains("one line"))
        );
        let e = parse("description: d\ngroup: misc\nallow_diff: [{field: fds, reason: ''}]\n")
            .unwrap_err();
        assert!(
            matches!(&e, DescriptorError::Invalid { message, .. } if message.contains("reason"))
        );
        let e = parse("- a\n- b\n").unwrap_err();
        assert!(matches!(&e, DescriptorError::Invalid { .. }));
    }

    #[test]
    fn yaml_syntax_error_has_location() {
        let e = parse("description: d\ngroup: [misc\n").unwrap_err();
        assert!(matches!(&e, DescriptorError::Yaml { .. }), "{e:?}");
        assert!(e.to_string().contains("line"), "{e}");
    }

    #[test]
    fn nouns_excludes_uns() {
        let d = parse("description: d\ngroup: misc\nflags: [nouns]\n").unwrap();
        assert!(d.runs_in(Flavor::Host) && d.runs_in(Flavor::Ns) && !d.runs_in(Flavor::Uns));
        let d = parse("description: d\ngroup: misc\nflavors: [ns]\n").unwrap();
        assert!(!d.runs_in(Flavor::Host));
    }

    #[test]
    fn vocabularies_round_trip() {
        for f in Feature::ALL {
            assert_eq!(Feature::from_name(f.as_str()), Some(*f));
        }
        assert_eq!("uns".parse::<Flavor>(), Ok(Flavor::Uns));
        let e = "hst".parse::<Flavor>().unwrap_err();
        assert!(
            e.contains("did you mean `h`?") || e.contains("valid: h, ns, uns"),
            "{e}"
        );
    }

    #[test]
    fn suggestions() {
        assert_eq!(suggest("exlc", Flag::NAMES).as_deref(), Some("excl"));
        assert_eq!(suggest("noatuo", Flag::NAMES).as_deref(), Some("noauto"));
        assert_eq!(suggest("SIGNALS", Group::NAMES).as_deref(), Some("signals"));
        assert_eq!(suggest("completely-different", Flag::NAMES), None);
    }
}
