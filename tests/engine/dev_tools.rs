//! Development tools stay apart: no production code path imports `src/dev/` (the fake
//! providers and stores, the benchmarks, the demo). Only the CLI's dev commands
//! (`src/cli/`), `src/main.rs`, `src/lib.rs` (which declares the module) and `src/dev/`
//! itself may name it. Runs with the suite, so CI keeps the rule.

use std::fs;
use std::path::{Path, PathBuf};

/// Paths under `src/` allowed to name the dev module.
const ALLOWED: &[&str] = &["src/dev/", "src/cli/", "src/main.rs", "src/lib.rs"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Lines of `source` (comments left out) that name the dev module.
fn dev_imports(source: &str) -> Vec<String> {
    source
        .lines()
        .map(str::trim)
        .filter(|line| !line.starts_with("//"))
        .filter(|line| {
            line.contains("crate::dev")
                || line.contains("genq::dev")
                || line.contains("super::dev")
                || line.contains("mod dev")
        })
        .map(str::to_owned)
        .collect()
}

#[test]
fn production_code_does_not_import_dev_tools() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    assert!(files.len() > 20, "found only {} source files", files.len());
    let mut offenders = Vec::new();
    for file in files {
        let rel = file
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        if ALLOWED.iter().any(|allowed| rel.starts_with(allowed)) {
            continue;
        }
        for line in dev_imports(&fs::read_to_string(&file).unwrap()) {
            offenders.push(format!("{rel}: {line}"));
        }
    }
    assert!(
        offenders.is_empty(),
        "production code imports src/dev:\n{}",
        offenders.join("\n")
    );
}

#[test]
fn the_check_sees_an_import() {
    // The rule itself: an import is caught, a comment naming the module is not.
    assert_eq!(
        dev_imports("//! see crate::dev\nuse crate::dev::fake_provider;\n"),
        vec!["use crate::dev::fake_provider;".to_owned()]
    );
}
