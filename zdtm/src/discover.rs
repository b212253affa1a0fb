//! Finding tests: `<tests>/static/<name>.rs` + `<name>.yaml`, same for `transition/`.
//!
//! A program without a descriptor gets [`Descriptor::default`]. A descriptor
//! without a program is a test too if it names an external executable (`exec`).
//! A broken descriptor does not stop discovery: it becomes a [`Entry::Broken`],
//! which the runner turns into a failing trial, so one bad file cannot hide the
//! rest of the suite and cannot go unnoticed either.

use crate::descriptor::{Descriptor, DescriptorError};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Subdirectories of the tests directory that hold tests, in run order.
pub const KINDS: &[&str] = &["static", "transition"];

/// What to execute for a test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Program {
    /// A `[[bin]]` of the test crate, found in the binary directory by this name.
    Bin(String),
    /// An external executable (descriptor `exec`), already resolved.
    Exec(PathBuf),
}

/// One test program with its descriptor.
#[derive(Debug, Clone)]
pub struct TestCase {
    /// `static/env00`
    pub name: String,
    /// `env00`
    pub stem: String,
    pub descriptor: Descriptor,
    /// `None` when the program has no descriptor.
    pub descriptor_path: Option<PathBuf>,
    pub program: Program,
}

/// A discovered test, or a descriptor that could not be used.
#[derive(Debug)]
pub enum Entry {
    Test(Box<TestCase>),
    Broken {
        name: String,
        error: DescriptorError,
    },
}

impl Entry {
    pub fn name(&self) -> &str {
        match self {
            Entry::Test(t) => &t.name,
            Entry::Broken { name, .. } => name,
        }
    }
}

/// Errors reading the tests directory itself.
#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    #[error("tests directory {} does not exist", path.display())]
    Missing { path: PathBuf },
    #[error("cannot list {}", path.display())]
    List {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Default)]
struct Found {
    rs: bool,
    yaml: Option<PathBuf>,
}

/// Discovers the tests under `root` (the `zdtm-tests` directory), sorted by name.
pub fn discover(root: &Path) -> Result<Vec<Entry>, DiscoverError> {
    if !root.is_dir() {
        return Err(DiscoverError::Missing {
            path: root.to_path_buf(),
        });
    }
    let mut out = Vec::new();
    for kind in KINDS {
        let dir = root.join(kind);
        if !dir.is_dir() {
            continue;
        }
        let mut found: BTreeMap<String, Found> = BTreeMap::new();
        let rd = std::fs::read_dir(&dir).map_err(|source| DiscoverError::List {
            path: dir.clone(),
            source,
        })?;
        for e in rd {
            let e = e.map_err(|source| DiscoverError::List {
                path: dir.clone(),
                source,
            })?;
            let path = e.path();
            let (Some(stem), Some(ext)) = (
                path.file_stem()
                    .and_then(|s| s.to_str())
                    .map(str::to_string),
                path.extension()
                    .and_then(|s| s.to_str())
                    .map(str::to_string),
            ) else {
                continue;
            };
            if stem.starts_with('.') {
                continue;
            }
            match ext.as_str() {
                "rs" => found.entry(stem).or_default().rs = true,
                "yaml" | "yml" => found.entry(stem).or_default().yaml = Some(path),
                _ => {}
            }
        }
        for (stem, f) in found {
            let name = format!("{kind}/{stem}");
            out.push(make_entry(&dir, name, stem, f));
        }
    }
    Ok(out)
}

fn make_entry(dir: &Path, name: String, stem: String, f: Found) -> Entry {
    let descriptor = match &f.yaml {
        Some(path) => match Descriptor::load(path) {
            Ok(d) => d,
            Err(error) => return Entry::Broken { name, error },
        },
        None => Descriptor::default(),
    };
    let program = match &descriptor.exec {
        Some(exec) => Program::Exec(dir.join(exec)),
        None if f.rs => Program::Bin(stem.clone()),
        None => {
            let path = f.yaml.clone().unwrap_or_default();
            return Entry::Broken {
                name,
                error: DescriptorError::Invalid {
                    message: format!("no program: neither {stem}.rs beside it nor an `exec` key"),
                    path,
                },
            };
        }
    };
    Entry::Test(Box::new(TestCase {
        name,
        stem,
        descriptor,
        descriptor_path: f.yaml,
        program,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::descriptor::Group;

    #[test]
    fn discovers_pairs_defaults_exec_and_broken() {
        let root = tempfile::tempdir().unwrap();
        let s = root.path().join("static");
        std::fs::create_dir(&s).unwrap();
        std::fs::write(s.join("a.rs"), "").unwrap();
        std::fs::write(s.join("a.yaml"), "description: a\ngroup: memory\n").unwrap();
        std::fs::write(s.join("b.rs"), "").unwrap();
        std::fs::write(
            s.join("c.yaml"),
            "description: c\ngroup: fs\nexec: run.sh\n",
        )
        .unwrap();
        std::fs::write(s.join("d.yaml"), "description: d\ngroup: fs\nflagz: []\n").unwrap();
        std::fs::write(s.join("e.yaml"), "description: e\ngroup: fs\n").unwrap();
        std::fs::write(s.join("notes.txt"), "").unwrap();
        let t = root.path().join("transition");
        std::fs::create_dir(&t).unwrap();
        std::fs::write(t.join("z.rs"), "").unwrap();

        let entries = discover(root.path()).unwrap();
        let names: Vec<&str> = entries.iter().map(|e| e.name()).collect();
        assert_eq!(
            names,
            [
                "static/a",
                "static/b",
                "static/c",
                "static/d",
                "static/e",
                "transition/z"
            ]
        );
        let Entry::Test(a) = &entries[0] else {
            panic!()
        };
        assert_eq!(a.descriptor.group, Group::Memory);
        assert_eq!(a.program, Program::Bin("a".into()));
        let Entry::Test(b) = &entries[1] else {
            panic!()
        };
        assert_eq!(b.descriptor.group, Group::Misc);
        assert!(b.descriptor_path.is_none());
        let Entry::Test(c) = &entries[2] else {
            panic!()
        };
        assert_eq!(c.program, Program::Exec(s.join("run.sh")));
        assert!(matches!(
            &entries[3],
            Entry::Broken { error: DescriptorError::UnknownKey { key, .. }, .. } if key == "flagz"
        ));
        assert!(matches!(
            &entries[4],
            Entry::Broken { error: DescriptorError::Invalid { message, .. }, .. } if message.contains("no program")
        ));
    }

    #[test]
    fn missing_root() {
        assert!(matches!(
            discover(Path::new("/nonexistent/zdtm-tests")),
            Err(DiscoverError::Missing { .. })
        ));
    }
}
