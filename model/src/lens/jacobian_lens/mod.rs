//! The Jacobian lens (J-lens; Gurnee et al. 2026, "Verbalizable Representations Form a Global
//! Workspace in Language Models"): one `d_model × d_model` transport matrix per source layer.
//!
//! `J[l]` maps the **output of block `l`** — our site `Block(l)`, the report's row `l + 1`, HF
//! `hidden_states[l + 1]` — to the final block's output before the final norm; the readout is
//! `unembed(final_norm(J[l] · h))` with the model's soft cap (the decoder's own). The final block
//! is never fitted: its row is the model's own logits. Every other row (the embeddings, the
//! sub-block rows, the layers a lens was not fitted at) has no transport: [`JacobianLens::transport_of`]
//! says so, and the engine decodes such a row with the identity and marks it in the report
//! ([`crate::output::report::LensReport::no_transport`]), never silently.
//!
//! Files are the reference format TransformerLens's `JacobianLens.save` and the published lenses
//! use ([`read`]): a `torch.save` dict `{"J": {layer: [d, d]}, "n_prompts", "source_layers",
//! "d_model", "metadata"?}`, or a fit checkpoint `{"jacobian_sum": {layer: [d, d]}, "n_done", …}`
//! (the sums divided by the count). [`registry`] lists the published lenses.

pub mod read;
pub mod registry;
pub mod write;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ndarray::{Array2, ArrayView2};

use crate::error::{LensError, Result};
use crate::run::sites::SiteKind;
use crate::source::checkpoint::{ElemType, decode_f32};

/// One transport matrix as the file stores it (float16 matrices stay float16 in memory, half
/// the size; each is widened to f32 only while it is applied).
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    /// Element type of `data`.
    pub dtype: ElemType,
    /// Row-major `[d_model, d_model]` values (`J[out][in]`), little-endian bytes.
    pub data: Vec<u8>,
}

impl Matrix {
    /// An f32 matrix from its values.
    pub fn from_f32(values: &[f32]) -> Self {
        Self { dtype: ElemType::F32, data: values.iter().flat_map(|v| v.to_le_bytes()).collect() }
    }

    /// Its values as f32.
    pub fn to_f32(&self) -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity(self.data.len() / self.dtype.size());
        decode_f32(self.dtype, &self.data, &mut out).map_err(|m| LensError::invalid(format!("internal: a J-lens matrix {m}")))?;
        Ok(out)
    }
}

/// A loaded J-lens.
#[derive(Debug, Clone, PartialEq)]
pub struct JacobianLens {
    /// Residual width it was fitted for.
    pub d_model: usize,
    /// Prompts averaged into the fit (the file's `n_prompts`, or a checkpoint's `n_done`).
    pub n_prompts: u64,
    /// The transport matrix of each source layer (block output `l`).
    pub matrices: BTreeMap<usize, Matrix>,
    /// The model the file's metadata names (`metadata.model_name`), if any.
    pub model_name: Option<String>,
    /// Read from a fit checkpoint (running sums divided by their count), not a finished lens.
    pub from_checkpoint: bool,
    /// Where it was read from (`None`: made in memory).
    pub source: Option<PathBuf>,
}

impl JacobianLens {
    /// Reads a lens file (see [`read::open`]).
    pub fn open(path: &Path) -> Result<Self> {
        read::open(path)
    }

    /// The layers it has a matrix for, ascending.
    pub fn source_layers(&self) -> Vec<usize> {
        self.matrices.keys().copied().collect()
    }

    /// A short description for reports and figure provenance: the file's path, or `in memory`.
    pub fn describe(&self) -> String {
        self.source.as_ref().map_or_else(|| "in memory".to_string(), |p| p.display().to_string())
    }

    /// Refuses a lens made for another model: its width, and a source layer the model does not
    /// have below its final block (`J[n_layers − 1]` would transport the final block to itself;
    /// a lens fitted on a deeper model names layers past it).
    pub fn check_model(&self, n_layers: usize, d_model: usize) -> Result<()> {
        let path = self.source.clone().unwrap_or_else(|| PathBuf::from("J-lens"));
        if self.d_model != d_model {
            return Err(LensError::bad_file(&path, format!("this J-lens is for a model of width d_model {}, the open model has {d_model}", self.d_model)));
        }
        if let Some(&top) = self.matrices.keys().next_back()
            && top + 1 >= n_layers
        {
            return Err(LensError::bad_file(
                &path,
                format!(
                    "this J-lens has a matrix for layer {top}; the open model has {n_layers} layers, so a J-lens for it has source layers 0..={} (the final block is never fitted): it was fitted on another model",
                    n_layers.saturating_sub(2)
                ),
            ));
        }
        Ok(())
    }

    /// The source layer whose matrix transports `site`, if any: `Block(l)` with a matrix for `l`.
    /// The embeddings, the sub-block rows and unfitted layers have none (the final block never
    /// has one: its row is the model's own output).
    pub fn transport_of(&self, site: SiteKind) -> Option<usize> {
        match site {
            SiteKind::Block(l) if self.matrices.contains_key(&l) => Some(l),
            _ => None,
        }
    }

    /// `J[layer] · h` for every row of `h` // h: [rows, d] -> [rows, d]
    pub fn transport(&self, layer: usize, h: ArrayView2<'_, f32>) -> Result<Array2<f32>> {
        let d = self.d_model;
        let m = self.matrices.get(&layer).ok_or_else(|| LensError::invalid(format!("internal: the J-lens has no matrix for layer {layer}")))?;
        if h.ncols() != d {
            return Err(LensError::invalid(format!("internal: a residual of width {} for a J-lens of width {d}", h.ncols())));
        }
        let j = m.to_f32()?;
        let j = ArrayView2::from_shape((d, d), j.as_slice()).map_err(|e| LensError::invalid(e.to_string()))?;
        Ok(h.dot(&j.t()))
    }

    /// Bytes its matrices hold in memory.
    pub fn bytes(&self) -> usize {
        self.matrices.values().map(|m| m.data.len()).sum()
    }
}
