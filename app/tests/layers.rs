//! The app's layers (issue 11): `session` and `view` sit under every face and use no egui; the
//! faces never import each other's modules the wrong way — the CLI never imports the GUI (the
//! binary hands it `gui::serve`), figures never import the GUI or the CLI, the GUI never imports
//! the CLI — and nothing under `session`/`view` imports a face. Checked on the source text, so a
//! new import that breaks the rule fails here.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(rust_files(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out
}

/// `(file, line)` of every code line (comments left out) under `dir` that contains `needle`.
fn uses(dir: &str, needle: &str) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(dir);
    let mut hits = Vec::new();
    for f in rust_files(&root) {
        for (i, line) in std::fs::read_to_string(&f).unwrap().lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if code.contains(needle) {
                hits.push(format!("{}:{}: {}", f.display(), i + 1, line.trim()));
            }
        }
    }
    hits
}

#[test]
fn layers_import_only_downwards() {
    let rules: [(&str, &[&str]); 5] = [
        ("session", &["egui", "eframe", "crate::gui", "crate::cli", "crate::figure", "crate::view"]),
        ("view", &["egui", "eframe", "crate::gui", "crate::cli", "crate::figure"]),
        ("figure", &["crate::gui", "crate::cli", "egui::"]),
        ("cli", &["crate::gui"]),
        ("gui", &["crate::cli"]),
    ];
    let mut broken = Vec::new();
    for (dir, needles) in rules {
        for n in needles {
            broken.extend(uses(dir, n).into_iter().map(|h| format!("{dir} must not use {n}: {h}")));
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
    // The rule can fail: the GUI does use egui.
    assert!(!uses("gui", "egui::").is_empty());
}
