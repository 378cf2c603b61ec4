//! `config.json` of a tuned lens, in the current layout of the `tuned-lens` package and its older
//! ones (`num_layers`, `include_input`, `vocab_size`; some published lenses spell the hash key
//! `unemebd_hash`).

use std::path::Path;

use serde_json::{Map, Value, json};

use crate::error::{LensError, Result};

/// The config file's name.
pub const CONFIG_FILE: &str = "config.json";
/// The only lens type read.
pub const LINEAR_TUNED_LENS: &str = "linear_tuned_lens";

/// A tuned lens's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunedLensConfig {
    /// The model it was tuned for (as its trainer named it).
    pub base_model_name_or_path: String,
    /// That model's revision, if recorded.
    pub base_model_revision: Option<String>,
    /// Width of the residual stream.
    pub d_model: usize,
    /// Layers of the model.
    pub num_hidden_layers: usize,
    /// Whether the translators have a bias.
    pub bias: bool,
    /// `tensor_hash` of the unembedding it was trained with, if recorded.
    pub unembed_hash: Option<String>,
    /// Whether translator 0 reads the embeddings (older lenses could leave it out).
    pub include_input: bool,
}

fn field<'a>(m: &'a Map<String, Value>, keys: &[&str]) -> Option<&'a Value> {
    keys.iter().find_map(|k| m.get(*k).filter(|v| !v.is_null()))
}

impl TunedLensConfig {
    /// Parses `config.json` text (`path` for messages).
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let bad = |msg: String| LensError::bad_file(path, msg);
        let v: Value = serde_json::from_str(text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        let m = v.as_object().ok_or_else(|| bad("expected a JSON object".into()))?;
        let lens_type = field(m, &["lens_type"]).map_or(Some(LINEAR_TUNED_LENS), Value::as_str);
        if lens_type != Some(LINEAR_TUNED_LENS) {
            return Err(bad(format!("lens_type {:?} is not supported: only {LINEAR_TUNED_LENS:?} lenses are read", field(m, &["lens_type"]))));
        }
        let count = |keys: &[&str]| -> Result<usize> {
            let v = field(m, keys).ok_or_else(|| bad(format!("missing {:?}: is this a tuned lens's config.json?", keys.first().unwrap_or(&""))))?;
            v.as_u64()
                .filter(|&n| n > 0)
                .map(|n| n as usize)
                .ok_or_else(|| bad(format!("{:?} must be a positive integer, not {v}", keys.first().unwrap_or(&""))))
        };
        let d_model = count(&["d_model"])?;
        let num_hidden_layers = count(&["num_hidden_layers", "num_layers"])?;
        let flag = |key: &str, default: bool| -> Result<bool> {
            match field(m, &[key]) {
                None => Ok(default),
                Some(v) => v.as_bool().ok_or_else(|| bad(format!("{key:?} must be true or false, not {v}"))),
            }
        };
        let string = |keys: &[&str]| -> Result<Option<String>> {
            match field(m, keys) {
                None => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(v) => Err(bad(format!("{:?} must be a string, not {v}", keys.first().unwrap_or(&"")))),
            }
        };
        Ok(Self {
            base_model_name_or_path: string(&["base_model_name_or_path"])?.unwrap_or_default(),
            base_model_revision: string(&["base_model_revision"])?,
            d_model,
            num_hidden_layers,
            bias: flag("bias", true)?,
            unembed_hash: string(&["unembed_hash", "unemebd_hash"])?,
            include_input: flag("include_input", true)?,
        })
    }

    /// Reads `config.json`.
    pub fn read(path: &Path) -> Result<Self> {
        if !path.is_file() {
            return Err(LensError::bad_file(path, "missing: a tuned lens folder holds config.json and params.pt (or params.safetensors)"));
        }
        let text = std::fs::read_to_string(path).map_err(|e| LensError::io(path, e))?;
        Self::parse(&text, path)
    }

    /// The JSON the `tuned-lens` package writes (`TunedLensConfig.to_dict()`).
    pub fn to_json(&self) -> Value {
        json!({
            "base_model_name_or_path": self.base_model_name_or_path,
            "d_model": self.d_model,
            "num_hidden_layers": self.num_hidden_layers,
            "bias": self.bias,
            "base_model_revision": self.base_model_revision,
            "unembed_hash": self.unembed_hash,
            "lens_type": LINEAR_TUNED_LENS,
        })
    }
}
