//! The model repository on disk: `<root>/<model>/<version>/{model.onnx, manifest.json}`. Versions are positive
//! integers, as in Triton and TF Serving, so "highest version" is well defined. Every path handed out here is
//! resolved inside the root: names with separators or `..`, absolute paths, and symlinks that lead out are refused,
//! because later the admin API passes operator-supplied names through here.

use std::path::{Component, Path, PathBuf};

pub const MODEL_FILE: &str = "model.onnx";

#[derive(Debug, Clone)]
pub struct Repository {
    root: PathBuf,
}

/// What a scan found: models and their version numbers, plus entries that were skipped and why.
#[derive(Debug, Default)]
pub struct Scan {
    pub models: Vec<(String, Vec<u64>)>,
    pub skipped: Vec<String>,
}

impl Repository {
    pub fn open(root: &Path) -> Result<Self, String> {
        let root =
            root.canonicalize().map_err(|e| format!("model repository '{}' is not accessible: {e}", root.display()))?;
        if !root.is_dir() {
            return Err(format!("model repository '{}' is not a directory", root.display()));
        }
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Lists model directories and their numeric version directories, sorted.
    pub fn scan(&self) -> Result<Scan, String> {
        let mut scan = Scan::default();
        let entries = std::fs::read_dir(&self.root).map_err(|e| format!("cannot list {}: {e}", self.root.display()))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !entry.path().is_dir() {
                continue;
            }
            let Ok(dir) = self.model_dir(&name) else {
                scan.skipped.push(format!("{name}: outside the repository"));
                continue;
            };
            let versions = list_versions(&dir, &name, &mut scan.skipped);
            // Directories without any version (like `train/`) are not models.
            if !versions.is_empty() {
                scan.models.push((name, versions));
            }
        }
        scan.models.sort();
        Ok(scan)
    }

    /// The version numbers of one model on disk, sorted (none for a model that is not in the repository).
    pub fn versions(&self, model: &str) -> Vec<u64> {
        self.model_dir(model).map(|dir| list_versions(&dir, model, &mut Vec::new())).unwrap_or_default()
    }

    pub fn model_dir(&self, model: &str) -> Result<PathBuf, String> {
        check_name("model", model)?;
        self.inside(&self.root.join(model))
    }

    /// The directory of one version, refusing anything that resolves outside the repository.
    pub fn version_dir(&self, model: &str, version: &str) -> Result<PathBuf, String> {
        check_name("model", model)?;
        check_name("version", version)?;
        parse_version(version).ok_or_else(|| format!("version '{version}' is not a positive integer"))?;
        self.inside(&self.root.join(model).join(version))
    }

    /// Refuses a version whose files lead outside the repository: a symlinked `model.onnx` or manifest is
    /// followed only when its target is inside, like a symlinked directory.
    pub fn check_files(&self, dir: &Path) -> Result<(), String> {
        for name in [MODEL_FILE, crate::manifest::MANIFEST_FILE] {
            let path = dir.join(name);
            if std::fs::symlink_metadata(&path).is_ok() {
                self.inside(&path)?;
            }
        }
        Ok(())
    }

    fn inside(&self, path: &Path) -> Result<PathBuf, String> {
        let real = path
            .canonicalize()
            .map_err(|_| format!("'{}' does not exist in the model repository", rel(path, &self.root)))?;
        if real.starts_with(&self.root) {
            Ok(real)
        } else {
            Err(format!("'{}' leads outside the model repository", rel(path, &self.root)))
        }
    }
}

fn rel(path: &Path, root: &Path) -> String {
    path.strip_prefix(root).unwrap_or(path).display().to_string()
}

/// Numeric version directories of a model directory, sorted; anything else is noted in `skipped`.
fn list_versions(dir: &Path, model: &str, skipped: &mut Vec<String>) -> Vec<u64> {
    let mut versions = Vec::new();
    for v in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let vname = v.file_name().to_string_lossy().into_owned();
        if !v.path().is_dir() {
            continue;
        }
        match parse_version(&vname) {
            Some(n) => versions.push(n),
            None => skipped.push(format!("{model}/{vname}: version directories are positive integers")),
        }
    }
    versions.sort_unstable();
    versions
}

pub fn parse_version(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || s.starts_with('0') {
        return None;
    }
    s.parse().ok().filter(|&n| n > 0)
}

/// A model or version name must be one plain path component.
pub fn check_name(kind: &str, name: &str) -> Result<(), String> {
    let mut comps = Path::new(name).components();
    let plain = matches!(comps.next(), Some(Component::Normal(_))) && comps.next().is_none();
    if name.is_empty() || !plain || name.contains(['/', '\\', '\0']) {
        return Err(format!("{kind} name '{name}' must be a single directory name inside the model repository"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_positive_integers() {
        assert_eq!(parse_version("1"), Some(1));
        assert_eq!(parse_version("12"), Some(12));
        for bad in ["0", "01", "-1", "1.0", "", "v1", " 1"] {
            assert_eq!(parse_version(bad), None, "{bad}");
        }
    }

    #[test]
    fn traversal_absolute_and_symlinks_out_are_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(tmp.path().join("m/1")).expect("mkdir");
        std::fs::create_dir_all(outside.path().join("2")).expect("mkdir");
        std::os::unix::fs::symlink(outside.path().join("2"), tmp.path().join("m/2")).expect("symlink");
        let repo = Repository::open(tmp.path()).expect("open");
        assert!(repo.version_dir("m", "1").is_ok());
        for (m, v) in [("..", "1"), ("m", ".."), ("/etc", "1"), ("m/../m", "1"), ("m", "1/.."), ("", "1")] {
            assert!(repo.version_dir(m, v).is_err(), "{m}/{v}");
        }
        let err = repo.version_dir("m", "2").expect_err("symlink out");
        assert!(err.contains("outside"), "{err}");
        let err = repo.version_dir("m", "3").expect_err("missing");
        assert!(err.contains("does not exist"), "{err}");
        // Files, too: a symlinked model.onnx leading out is refused, one leading inside is fine.
        std::fs::write(outside.path().join("model.onnx"), b"x").expect("write");
        std::os::unix::fs::symlink(outside.path().join("model.onnx"), tmp.path().join("m/1/model.onnx"))
            .expect("symlink");
        let dir = repo.version_dir("m", "1").expect("dir");
        let err = repo.check_files(&dir).expect_err("file symlink out");
        assert!(err.contains("outside") && err.contains("model.onnx"), "{err}");
        std::fs::remove_file(tmp.path().join("m/1/model.onnx")).expect("rm");
        std::fs::write(tmp.path().join("m/real.json"), b"{}").expect("write");
        std::os::unix::fs::symlink(tmp.path().join("m/real.json"), tmp.path().join("m/1/manifest.json"))
            .expect("symlink");
        repo.check_files(&dir).expect("a link inside the repository is fine");
    }

    #[test]
    fn scan_lists_models_and_skips_non_versions() {
        let tmp = tempfile::tempdir().expect("tempdir");
        for d in ["a/1", "a/10", "a/2", "a/latest", "b/3", "train"] {
            std::fs::create_dir_all(tmp.path().join(d)).expect("mkdir");
        }
        let scan = Repository::open(tmp.path()).expect("open").scan().expect("scan");
        assert_eq!(scan.models, vec![("a".to_string(), vec![1, 2, 10]), ("b".to_string(), vec![3])]);
        assert_eq!(scan.skipped.len(), 1, "{:?}", scan.skipped);
    }
}
