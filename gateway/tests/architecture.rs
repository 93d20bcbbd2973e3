//! The crate's layers, checked: every `crate::` path in a top-level module of `src/` points at a module of a lower
//! layer (or at itself). A new upward import fails here with the file, the line and the two layers, so the import
//! graph stays free of cycles. The layers are the ones `lib.rs`'s module map describes; within a layer of the
//! design, a finer order is fixed here (`manifest` and `routing` below `protocol`, `skew` below `rollout`,
//! `telemetry`, `state`, `metrics` and `tls` below `config`, `cluster` below `controller`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Module, rank, and the design's layer it belongs to (for messages).
const LAYERS: &[(&str, u32, &str)] = &[
    ("error", 0, "1"),
    ("tensor", 0, "1"),
    ("clock", 0, "1"),
    ("manifest", 1, "2"),
    ("routing", 1, "2"),
    ("protocol", 2, "2"),
    ("skew", 3, "3"),
    ("rollout", 4, "3"),
    ("telemetry", 5, "4"),
    ("state", 5, "4"),
    ("metrics", 5, "4"),
    ("tls", 5, "4"),
    ("config", 6, "4"),
    ("model", 7, "5"),
    ("mirror", 8, "6"),
    ("core", 9, "7"),
    ("cluster", 10, "8"),
    ("controller", 11, "8"),
    ("api", 12, "9"),
    ("cli", 13, "10"),
    ("lib", 14, "10"),
    ("main", 14, "10"),
];

fn rank(module: &str) -> Option<(u32, &'static str)> {
    LAYERS.iter().find(|(m, _, _)| *m == module).map(|&(_, r, l)| (r, l))
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a source file belongs to: `src/model/slot.rs` is `model`, `src/core.rs` is `core`.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("under src");
    let first = rel.components().next().expect("a component").as_os_str().to_string_lossy().into_owned();
    first.trim_end_matches(".rs").to_string()
}

/// `crate::` paths in the code of a file, with their line numbers: comments and the unit-test module (which may
/// reach anywhere to set up a test) are left out.
fn imports(text: &str) -> Vec<(usize, String)> {
    let code = match text.find("#[cfg(test)]\nmod ") {
        Some(i) => &text[..i],
        None => text,
    };
    let mut out = Vec::new();
    for (n, line) in code.lines().enumerate() {
        if line.trim_start().starts_with("//") {
            continue;
        }
        let mut rest = line;
        while let Some(i) = rest.find("crate::") {
            let after = &rest[i + "crate::".len()..];
            let name: String = after.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if !name.is_empty() {
                out.push((n + 1, name));
            }
            rest = after;
        }
    }
    out
}

#[test]
fn every_import_points_down_the_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    files.sort();
    let mut violations = Vec::new();
    let mut graph: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let module = module_of(&src, file);
        let Some((from, from_layer)) = rank(&module) else {
            violations.push(format!("{}: module '{module}' has no layer in tests/architecture.rs", file.display()));
            continue;
        };
        let text = std::fs::read_to_string(file).expect("read");
        for (line, target) in imports(&text) {
            if target == module {
                continue;
            }
            graph.entry(module.clone()).or_default().insert(target.clone());
            match rank(&target) {
                Some((to, _)) if to < from => {}
                Some((_, to_layer)) => violations.push(format!(
                    "{}:{line}: '{module}' (layer {from_layer}) imports '{target}' (layer {to_layer}), which is not below it",
                    file.display()
                )),
                None => violations.push(format!("{}:{line}: unknown module '{target}'", file.display())),
            }
        }
    }
    assert!(violations.is_empty(), "imports that break the layering:\n{}", violations.join("\n"));
    // The graph the check saw, so a change in the arrows shows in the test output.
    for (m, targets) in &graph {
        println!("{m} -> {}", targets.iter().cloned().collect::<Vec<_>>().join(", "));
    }
}

#[test]
fn the_check_sees_an_upward_import() {
    let text =
        "use crate::api::error::ApiError;\n// crate::core in a comment\n#[cfg(test)]\nmod tests { use crate::lib; }\n";
    assert_eq!(imports(text), vec![(1, "api".to_string())]);
}
