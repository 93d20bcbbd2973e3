//! A version's files on disk as it loaded them (a fingerprint of each file's size, modification and change
//! times and mode), and whether they still are: the watcher compares, the admin API and metadata show the result.

use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};

/// What a version directory looks like on disk: each entry's name, size, modification and change times, and mode.
/// `None` when the directory is gone.
pub type Fingerprint = Option<Vec<(String, u64, i64, i64, i64, i64, u32)>>;

pub fn fingerprint(dir: &Path) -> Fingerprint {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        // Follows symlinks: a link retargeted at another file is a change.
        if let Ok(m) = std::fs::metadata(e.path()) {
            let name = e.file_name().to_string_lossy().into_owned();
            out.push((name, m.size(), m.mtime(), m.mtime_nsec(), m.ctime(), m.ctime_nsec(), m.mode()));
        }
    }
    out.sort();
    Some(out)
}

/// A loaded version's files as they were at load, and whether they still are.
#[derive(Debug)]
pub struct DiskWatch {
    loaded: Fingerprint,
    state: AtomicU8,
}

/// Where a serving version's files stand against what it loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskState {
    Unchanged,
    Changed,
    Missing,
}

impl DiskState {
    pub fn label(self) -> &'static str {
        match self {
            Self::Unchanged => "unchanged",
            Self::Changed => "changed",
            Self::Missing => "missing",
        }
    }
}

impl DiskWatch {
    pub fn new(loaded: Fingerprint) -> Self {
        Self { loaded, state: AtomicU8::new(0) }
    }

    pub fn state(&self) -> DiskState {
        match self.state.load(Ordering::Relaxed) {
            0 => DiskState::Unchanged,
            1 => DiskState::Changed,
            _ => DiskState::Missing,
        }
    }

    /// Compares the files now with those loaded; returns the new state when it moved.
    pub fn check(&self, now: &Fingerprint, required: &[&str]) -> Option<DiskState> {
        let state = match now {
            None => DiskState::Missing,
            Some(files) if required.iter().any(|r| !files.iter().any(|f| f.0 == *r)) => DiskState::Missing,
            now if *now == self.loaded => DiskState::Unchanged,
            _ => DiskState::Changed,
        };
        let code = match state {
            DiskState::Unchanged => 0,
            DiskState::Changed => 1,
            DiskState::Missing => 2,
        };
        (self.state.swap(code, Ordering::Relaxed) != code).then_some(state)
    }
}
