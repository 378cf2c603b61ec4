//! The tuned lens (Belrose et al. 2023): one affine translator per layer, `h' = h + W h + b`,
//! applied to a site's residual before the model's own decoder (final norm + unembedding).
//!
//! Lenses are folders in the format of the `tuned-lens` Python package: `config.json` and
//! `params.pt` (a PyTorch zip-pickle of `{i}.weight` `[d, d]` and `{i}.bias` `[d]`), or
//! `params.safetensors` with the same keys. Translator `i` reads the residual of site `i` of the
//! plain site list (`0` = `embed`, `i` = the output of block `i − 1`); the last block's output
//! is the model's own logits and has no translator. [`fit`] trains one.

pub mod config;
pub mod fit;
pub mod grad;
pub mod hash;
pub mod params;

use std::path::{Path, PathBuf};

use ndarray::{Array2, ArrayView2};

use crate::error::{LensError, Result};
use crate::lens::kernel::Decoder;
use crate::run::sites::SiteKind;

pub use config::TunedLensConfig;

/// A loaded tuned lens.
#[derive(Debug, Clone, PartialEq)]
pub struct TunedLens {
    /// Its `config.json`.
    pub config: TunedLensConfig,
    /// Translator weights, `nn.Linear` layout (`out × in`, row-major), one per translator // [n][d·d]
    pub weights: Vec<Vec<f32>>,
    /// Translator biases (zeros for a lens without bias) // [n][d]
    pub biases: Vec<Vec<f32>>,
    /// Where it was read from (`None`: made in memory).
    pub source: Option<PathBuf>,
}

impl TunedLens {
    /// The identity lens (every translator zero), as the trainer starts.
    pub fn zeros(config: TunedLensConfig) -> Self {
        let (d, n) = (config.d_model, config.num_hidden_layers);
        Self { weights: vec![vec![0.0; d * d]; n], biases: vec![vec![0.0; d]; n], config, source: None }
    }

    /// Reads a lens folder (`config.json` + `params.pt` or `params.safetensors`).
    pub fn open(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(LensError::bad_file(dir, "not a folder: a tuned lens is a folder with config.json and params.pt (or params.safetensors)"));
        }
        let config = TunedLensConfig::read(&dir.join(config::CONFIG_FILE))?;
        let (weights, biases) = params::read(dir, &config)?;
        Ok(Self { config, weights, biases, source: Some(dir.to_path_buf()) })
    }

    /// Number of translators.
    pub fn len(&self) -> usize {
        self.weights.len()
    }

    /// Whether the lens has no translators.
    pub fn is_empty(&self) -> bool {
        self.weights.is_empty()
    }

    /// A short description for reports and figure provenance: the folder's name, or `in memory`.
    pub fn describe(&self) -> String {
        self.source.as_ref().map_or_else(|| "in memory".to_string(), |p| p.display().to_string())
    }

    /// Refuses a lens made for another model: its width, its layer count, and (where the lens
    /// records one) the hash of the unembedding it was trained with.
    pub fn check_model(&self, n_layers: usize, decoder: &Decoder) -> Result<()> {
        let path = self.source.clone().unwrap_or_default();
        let c = &self.config;
        if c.d_model != decoder.d_model {
            return Err(LensError::bad_file(
                &path,
                format!("this tuned lens is for a model of width d_model {}, the open model has {}", c.d_model, decoder.d_model),
            ));
        }
        if c.num_hidden_layers != n_layers {
            return Err(LensError::bad_file(&path, format!("this tuned lens is for a model of {} layers, the open model has {n_layers}", c.num_hidden_layers)));
        }
        let expected = if c.include_input { n_layers } else { n_layers.saturating_sub(1) };
        if self.len() != expected {
            return Err(LensError::bad_file(&path, format!("this tuned lens has {} translators, a model of {n_layers} layers needs {expected}", self.len())));
        }
        if let Some(want) = &c.unembed_hash {
            let ours = hash::unembedding_hash_of(&decoder.w_u, decoder.d_vocab, decoder.d_model);
            if &ours != want {
                return Err(LensError::bad_file(
                    &path,
                    format!(
                        "this tuned lens was trained for another model (base {:?}): its unembedding hash is {}…, the open model's is {}…",
                        c.base_model_name_or_path,
                        want.get(..12).unwrap_or(want),
                        ours.get(..12).unwrap_or(&ours)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The translator that reads `site`, if any: `embed` is translator 0 and block `l`'s output
    /// translator `l + 1` (one less without the input translator). The final block and the
    /// sub-block rows have none.
    pub fn translator_of(&self, site: SiteKind) -> Option<usize> {
        let i = match site {
            SiteKind::Embed => 0,
            SiteKind::Block(l) => l + 1,
            SiteKind::Attn(_) => return None,
        };
        let i = if self.config.include_input { Some(i) } else { i.checked_sub(1) };
        i.filter(|&i| i < self.len())
    }

    /// `h + h Wᵀ + b` for every row of `h` with translator `i` // h: [rows, d] -> [rows, d]
    pub fn translate(&self, i: usize, h: ArrayView2<'_, f32>) -> Result<Array2<f32>> {
        let d = self.config.d_model;
        let (Some(w), Some(b)) = (self.weights.get(i), self.biases.get(i)) else {
            return Err(LensError::invalid(format!("internal: the tuned lens has no translator {i}")));
        };
        if h.ncols() != d {
            return Err(LensError::invalid(format!("internal: a residual of width {} for a tuned lens of width {d}", h.ncols())));
        }
        let w = ArrayView2::from_shape((d, d), w.as_slice()).map_err(|e| LensError::invalid(e.to_string()))?;
        let mut out = h.dot(&w.t());
        out += &h;
        let b = ndarray::ArrayView1::from(b.as_slice());
        out += &b;
        Ok(out)
    }

    /// Writes the lens in the tuned-lens package's format (`config.json`, `params.pt`) into
    /// `dir`, replacing what is there only once everything is written.
    pub fn save(&self, dir: &Path) -> Result<()> {
        params::save(dir, &self.config, &self.weights, &self.biases)
    }
}
