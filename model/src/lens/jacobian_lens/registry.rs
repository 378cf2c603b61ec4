//! The published J-lenses (`registry.json` beside this file): which file on the Hugging Face hub
//! holds the lens of which base model, at which revision.

use serde::Deserialize;

/// The table, as committed.
const REGISTRY_JSON: &str = include_str!("registry.json");

/// One published lens.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Published {
    /// Its short name (`gemma-2-2b`, `gpt2-small`).
    pub name: String,
    /// The Hugging Face ids of the model it was fitted on (`google/gemma-2-2b`).
    pub model_ids: Vec<String>,
    /// The hub repository holding the file.
    pub repo_id: String,
    /// The file's path in the repository.
    pub filename: String,
    /// The text it was fitted on.
    #[serde(default)]
    pub corpus: Option<String>,
}

#[derive(Deserialize)]
struct Table {
    revision: String,
    lenses: Vec<Published>,
}

fn table() -> Option<Table> {
    serde_json::from_str(REGISTRY_JSON).ok()
}

/// The repository revision (a commit) every published lens is downloaded at.
pub fn revision() -> String {
    table().map(|t| t.revision).unwrap_or_default()
}

/// Every published lens.
pub fn all() -> Vec<Published> {
    table().map(|t| t.lenses).unwrap_or_default()
}

/// The Hugging Face id a model reference names, if it names one: `org/name` itself, or a hub
/// cache folder (`…/models--org--name/snapshots/REV`).
fn hub_id_of(model: &str) -> Option<String> {
    let norm = model.replace('\\', "/");
    if let Some(i) = norm.find("models--") {
        let rest = norm.get(i + "models--".len()..)?;
        let repo = rest.split('/').next()?;
        return repo.split_once("--").map(|(org, name)| format!("{org}/{name}"));
    }
    let parts: Vec<&str> = norm.split('/').collect();
    match parts.as_slice() {
        [org, name] if !org.is_empty() && !name.is_empty() && !org.starts_with('.') && !std::path::Path::new(model).exists() => Some(norm.clone()),
        _ => None,
    }
}

/// The published lens of the model `model` names (a hub id such as `google/gemma-2-2b`, a hub
/// cache folder of one, or a lens's short name), if there is one. Matching ignores case; a
/// plain local folder is matched by its name only when that is a published model's full id's
/// last part (a folder `gemma-2-2b` matches `google/gemma-2-2b`).
pub fn find(model: &str) -> Option<Published> {
    let lenses = all();
    let eq = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    if let Some(id) = hub_id_of(model) {
        return lenses.into_iter().find(|l| l.model_ids.iter().any(|m| eq(m, &id)));
    }
    let last = model.replace('\\', "/").trim_end_matches('/').rsplit('/').next().unwrap_or_default().to_string();
    lenses.into_iter().find(|l| eq(&l.name, model) || l.model_ids.iter().any(|m| m.rsplit('/').next().is_some_and(|n| eq(n, &last))))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_table_parses_and_finds_models() {
        assert!(all().len() >= 30, "{}", all().len());
        assert_eq!(revision().len(), 40);
        let g = find("google/gemma-2-2b").unwrap();
        assert_eq!(g.filename, "gemma-2-2b/jlens/Salesforce-wikitext/gemma-2-2b_jacobian_lens.pt");
        assert_eq!(find("/cache/models--meta-llama--Llama-3.1-8B/snapshots/abc").unwrap().name, "llama3.1-8b");
        assert_eq!(find("/models/Qwen3-4B").unwrap().name, "qwen3-4b");
        assert_eq!(find("gpt2-small").unwrap().name, "gpt2-small");
        assert!(find("google/gemma-2-2b-unknown").is_none());
        assert!(find("/models/my-model").is_none());
    }
}
