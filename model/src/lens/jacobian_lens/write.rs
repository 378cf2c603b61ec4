//! Writing J-lens files in the reference formats TransformerLens's `JacobianLens.load` reads: the
//! artifact (`{"J": {layer: [d, d]}, "n_prompts", "source_layers", "d_model", "metadata"}`, f16 by
//! default as `JacobianLens.save` writes it) and the fit checkpoint (`{"jacobian_sum": {layer:
//! [d, d] f32}, "n_done", "next_idx", "source_layers", "target_layer", "skip_first",
//! "metadata"}`).

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{LensError, Result};
use crate::lens::torch_save::{Py, pickle, write_zip};

/// The matrices as storages and the `{layer: tensor}` dict that names them.
fn matrices_dict(matrices: &BTreeMap<usize, Vec<f32>>, d: usize, half: bool) -> Result<(Py, Vec<Vec<u8>>)> {
    let mut items = Vec::with_capacity(matrices.len());
    let mut storages = Vec::with_capacity(matrices.len());
    for (key, (&layer, m)) in matrices.iter().enumerate() {
        if m.len() != d * d {
            return Err(LensError::invalid(format!("internal: the J-lens matrix of layer {layer} holds {} values, not {d}×{d}", m.len())));
        }
        if let Some(v) = m.iter().find(|v| !v.is_finite()) {
            return Err(LensError::invalid(format!("the J-lens matrix of layer {layer} holds {v}: nothing written")));
        }
        let bytes: Vec<u8> =
            if half { m.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect() } else { m.iter().flat_map(|v| v.to_le_bytes()).collect() };
        storages.push(bytes);
        items.push((Py::Int(layer as i64), Py::Tensor { key, shape: vec![d, d], half }));
    }
    Ok((Py::Dict(items), storages))
}

fn layers_list(matrices: &BTreeMap<usize, Vec<f32>>) -> Py {
    Py::List(matrices.keys().map(|&l| Py::Int(l as i64)).collect())
}

/// Writes a finished lens (the per-layer means `matrices`, row-major `J[out][in]`) to `path`,
/// replacing it atomically; f16 storage when `half` (the reference default), else f32.
pub fn save_lens(path: &Path, matrices: &BTreeMap<usize, Vec<f32>>, n_prompts: u64, d: usize, metadata: Vec<(String, Py)>, half: bool) -> Result<()> {
    let (j, storages) = matrices_dict(matrices, d, half)?;
    let mut payload = vec![
        (Py::Str("J".into()), j),
        (Py::Str("n_prompts".into()), Py::Int(n_prompts as i64)),
        (Py::Str("source_layers".into()), layers_list(matrices)),
        (Py::Str("d_model".into()), Py::Int(d as i64)),
    ];
    if !metadata.is_empty() {
        payload.push((Py::Str("metadata".into()), Py::Dict(metadata.into_iter().map(|(k, v)| (Py::Str(k), v)).collect())));
    }
    let refs: Vec<&[u8]> = storages.iter().map(Vec::as_slice).collect();
    write_zip(path, "lens", &pickle(&Py::Dict(payload))?, &refs)
}

/// What a fit checkpoint holds besides its sums.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointInfo {
    /// Prompts summed.
    pub n_done: u64,
    /// The next prompt's index in the prompts file.
    pub next_idx: u64,
    /// The layer the Jacobians are taken to (the last block).
    pub target_layer: usize,
    /// Leading positions excluded.
    pub skip_first: usize,
}

/// Writes a fit checkpoint (the running sums, f32) to `path`, replacing it atomically.
pub fn save_checkpoint(path: &Path, sums: &BTreeMap<usize, Vec<f32>>, d: usize, info: &CheckpointInfo, metadata: Vec<(String, Py)>) -> Result<()> {
    let (j, storages) = matrices_dict(sums, d, false)?;
    let payload = vec![
        (Py::Str("jacobian_sum".into()), j),
        (Py::Str("n_done".into()), Py::Int(info.n_done as i64)),
        (Py::Str("next_idx".into()), Py::Int(info.next_idx as i64)),
        (Py::Str("source_layers".into()), layers_list(sums)),
        (Py::Str("target_layer".into()), Py::Int(info.target_layer as i64)),
        (Py::Str("skip_first".into()), Py::Int(info.skip_first as i64)),
        (Py::Str("metadata".into()), Py::Dict(metadata.into_iter().map(|(k, v)| (Py::Str(k), v)).collect())),
    ];
    let refs: Vec<&[u8]> = storages.iter().map(Vec::as_slice).collect();
    write_zip(path, "checkpoint", &pickle(&Py::Dict(payload))?, &refs)
}
