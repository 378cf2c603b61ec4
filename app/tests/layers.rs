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

/// The stage of a `lens_model` module path's first segment, or `None` for the base modules.
fn stage_rank(stage: &str) -> Option<usize> {
    ["source", "build", "run", "lens", "output", "analyses", "remote"].iter().position(|s| *s == stage)
}

/// `(file relative to model/src, "stage::module")` of every code line's `crate::stage::module`.
fn model_imports() -> Vec<(String, String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../model/src");
    let mut out = Vec::new();
    for f in rust_files(&root) {
        let rel = f.strip_prefix(&root).unwrap().to_string_lossy().replace('\\', "/");
        for line in std::fs::read_to_string(&f).unwrap().lines() {
            let code = line.split("//").next().unwrap_or("");
            for (i, _) in code.match_indices("crate::") {
                let rest = &code[i + "crate::".len()..];
                let path: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':').collect();
                let mut parts = path.split("::").filter(|p| !p.is_empty());
                if let (Some(stage), Some(module)) = (parts.next(), parts.next())
                    && stage_rank(stage).is_some()
                {
                    out.push((rel.clone(), stage.to_string(), module.to_string()));
                }
            }
        }
    }
    out
}

/// The model's stages (DESIGN.md, "Layers"): each imports only the stages before it and the base,
/// with the named exceptions; the base imports no stage; the graph builder never imports a family.
#[test]
fn model_stages_import_only_earlier_stages() {
    let exceptions: [(&str, &str, Option<&str>); 3] =
        [("run/engine.rs", "lens", None), ("run/engine.rs", "output", None), ("run/trace.rs", "lens", Some("kernel"))];
    let imports = model_imports();
    assert!(imports.len() > 100, "the scan found the imports ({})", imports.len());
    let mut broken = Vec::new();
    for (file, stage, module) in &imports {
        let own = file.split('/').next().unwrap();
        let target = stage_rank(stage).unwrap();
        let allowed = match stage_rank(own) {
            None => false, // a base module (error.rs, files.rs, grid.rs, lib.rs's re-exports excepted)
            Some(r) => target <= r || exceptions.iter().any(|(f, s, m)| f == file && s == stage && m.is_none_or(|m| m == module)),
        };
        if !allowed && file != "lib.rs" {
            broken.push(format!("model/src/{file} imports crate::{stage}::{module}"));
        }
        if file.starts_with("build/graph/") && stage == "build" && module == "arch" {
            broken.push(format!("model/src/{file} imports the families (crate::build::arch): the block comes from the caller"));
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
    // The rule can fail: the engine does import a later stage.
    assert!(imports.iter().any(|(f, s, _)| f == "run/engine.rs" && s == "lens"));
}
