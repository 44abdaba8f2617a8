//! The engine stays under the product (DESIGN.md, Layers): `scripts/check-layers.sh` finds
//! no `crate::` path from the engine (`src/queue`, `src/daemon`, `src/maintenance`,
//! `src/db`) to a product module, and it does catch one when there is.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn check_layers(paths: &[&Path]) -> Output {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    Command::new("bash")
        .arg(root.join("scripts/check-layers.sh"))
        .args(paths)
        .output()
        .expect("cannot run scripts/check-layers.sh")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn the_engine_imports_no_product_module() {
    let out = check_layers(&[]);
    assert!(
        out.status.success(),
        "the engine imports the product:\n{}",
        stderr(&out)
    );
}

#[test]
fn the_check_names_every_product_path_it_finds() {
    let dir = tempfile::tempdir().unwrap();
    let engine: PathBuf = dir.path().join("queue");
    std::fs::create_dir(&engine).unwrap();
    std::fs::write(
        engine.join("clean.rs"),
        "use crate::{db, metrics as m};\nuse crate::daemon::{config::{PruneConfig}, Registry};\n",
    )
    .unwrap();
    assert!(check_layers(&[&engine]).status.success());

    std::fs::write(
        engine.join("leaky.rs"),
        "use crate::{\n    db,\n    jobs::{prune, sweep},\n};\n/// See [`crate::Config`].\nfn f() { crate::retention::apply(); }\nuse super::super::cli;\n",
    )
    .unwrap();
    let out = check_layers(&[&engine]);
    assert!(!out.status.success(), "a leaky engine passed the check");
    let report = stderr(&out);
    for expected in [
        "leaky.rs:1: crate::{",
        "leaky.rs:5: crate::Config",
        "leaky.rs:6: crate::retention",
        "leaky.rs:7: super::super::",
    ] {
        assert!(report.contains(expected), "{expected:?} not in:\n{report}");
    }
    assert!(!report.contains("clean.rs"), "{report}");
}
