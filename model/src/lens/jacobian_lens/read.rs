//! Reading J-lens files: the reference artifact (`{"J": {layer: [d, d]}, "n_prompts",
//! "source_layers", "d_model", "metadata"?}`) and the fit checkpoint (`{"jacobian_sum": {layer:
//! [d, d]}, "n_done", …}`), both `torch.save` zips. The pickle is checked by
//! [`crate::source::checkpoint::pickle_globals`] before anything is parsed (nothing in it runs);
//! matrices are read one at a time, each checked (shape, finite values) as it is read, so a
//! lens is never held twice.

use std::collections::BTreeMap;
use std::path::Path;

use pytorch_reader::PickleValue;

use crate::error::{LensError, Result};
use crate::lens::jacobian_lens::{JacobianLens, Matrix};
use crate::source::checkpoint::{decode_f32, open_pytorch, read_pytorch_tensor};

/// The key of a finished lens's matrices.
const J_KEY: &str = "J";
/// The key of a fit checkpoint's running sums.
const SUM_KEY: &str = "jacobian_sum";

fn int_of(v: Option<&PickleValue>) -> Option<i64> {
    match v {
        Some(PickleValue::Int(i)) => Some(*i),
        _ => None,
    }
}

/// `(layer, tensor name)` of every matrix under `key` (`J.3` → 3), sorted by layer.
fn layers_under(path: &Path, names: &[String], key: &str) -> Result<Vec<(usize, String)>> {
    let prefix = format!("{key}.");
    let mut out = Vec::new();
    for name in names {
        let Some(rest) = name.strip_prefix(&prefix) else { continue };
        let layer = rest.parse::<usize>().map_err(|_| {
            LensError::bad_file(path, format!("tensor {name}: a J-lens's {key} maps layer numbers to matrices, {rest:?} is not a layer number"))
        })?;
        out.push((layer, name.clone()));
    }
    out.sort();
    Ok(out)
}

/// Reads a J-lens file (artifact or fit checkpoint).
pub fn open(path: &Path) -> Result<JacobianLens> {
    if path.is_dir() {
        return Err(LensError::bad_file(
            path,
            "a folder: a J-lens is one .pt file (a folder with config.json and params.pt is a tuned lens: open it with --tuned-lens)",
        ));
    }
    let tensors = open_pytorch(path)?;
    let mut names: Vec<String> = tensors.keys().cloned().collect();
    names.sort();
    let header =
        pytorch_reader::PytorchReader::read_pickle_data(path, None).map_err(|e| LensError::bad_file(path, format!("cannot read this J-lens's pickle: {e}")))?;
    let PickleValue::Dict(header) = header else {
        return Err(LensError::bad_file(
            path,
            "not a J-lens file: its pickle is not a dict (expected {\"J\": {layer: matrix}, \"n_prompts\", \"d_model\", …})",
        ));
    };
    let artifact = layers_under(path, &names, J_KEY)?;
    let sums = layers_under(path, &names, SUM_KEY)?;
    let (layers, from_checkpoint) = match (artifact.is_empty(), sums.is_empty()) {
        (false, true) => (artifact, false),
        (true, false) => (sums, true),
        (false, false) => return Err(LensError::bad_file(path, "holds both a J-lens (J) and a fit checkpoint (jacobian_sum): not a file JacobianLens writes")),
        (true, true) if names.iter().any(|n| n.ends_with(".weight")) => {
            return Err(LensError::bad_file(path, "not a J-lens file: it holds layer weights (a tuned lens's params.pt, or a model?), no J matrices"));
        }
        (true, true) => return Err(LensError::bad_file(path, "not a J-lens file: no \"J\" (layer → matrix) or \"jacobian_sum\" in it")),
    };
    // The count the matrices are a mean over (a checkpoint's sums are divided by it).
    let n_prompts = if from_checkpoint { int_of(header.get("n_done")).or_else(|| int_of(header.get("n_prompts"))) } else { int_of(header.get("n_prompts")) };
    let n_prompts = match (n_prompts, from_checkpoint) {
        (Some(n), _) if n > 0 => n as u64,
        (Some(0) | None, false) => 0,
        (Some(n), false) => return Err(LensError::bad_file(path, format!("n_prompts is {n}; a J-lens is a mean over a number of prompts (0 or more)"))),
        (n, true) => {
            return Err(LensError::bad_file(
                path,
                format!("a fit checkpoint whose prompt count (n_done) is {n:?}: its sums cannot be averaged (fit at least one prompt)"),
            ));
        }
    };
    let declared_d = match header.get("d_model") {
        None => None,
        Some(PickleValue::Int(d)) if *d > 0 => Some(*d as usize),
        Some(other) => return Err(LensError::bad_file(path, format!("d_model is {other:?}, not a positive integer"))),
    };
    if let Some(PickleValue::List(declared)) = header.get("source_layers") {
        let declared: Vec<Option<i64>> = declared.iter().map(|v| int_of(Some(v))).collect();
        let held: Vec<Option<i64>> = layers.iter().map(|(l, _)| i64::try_from(*l).ok()).collect();
        if declared != held && !from_checkpoint {
            return Err(LensError::bad_file(
                path,
                format!("its source_layers say {declared:?}, but it holds matrices for layers {:?}", layers.iter().map(|(l, _)| *l).collect::<Vec<_>>()),
            ));
        }
    }
    let model_name = match header.get("metadata") {
        Some(PickleValue::Dict(m)) => match m.get("model_name") {
            Some(PickleValue::String(s)) => Some(s.clone()),
            _ => None,
        },
        _ => None,
    };
    let d = match declared_d {
        Some(d) => d,
        None => layers.first().and_then(|(_, n)| tensors.get(n)).and_then(|t| t.shape().first().copied()).unwrap_or(0),
    };
    // Shapes first, for every matrix, before any is read.
    for (layer, name) in &layers {
        let t = tensors.get(name).ok_or_else(|| LensError::invalid(format!("internal: tensor {name} vanished")))?;
        if t.shape() != [d, d] {
            return Err(LensError::bad_file(
                path,
                format!("the matrix of layer {layer} has shape {:?}; a J-lens of width d_model {d} needs [{d}, {d}]", t.shape()),
            ));
        }
    }
    let mut matrices = BTreeMap::new();
    let mut values = Vec::with_capacity(d * d);
    for (layer, name) in layers {
        let t = tensors.get(&name).ok_or_else(|| LensError::invalid(format!("internal: tensor {name} vanished")))?;
        let (dtype, data) = read_pytorch_tensor(path, &name, t)?;
        values.clear();
        decode_f32(dtype, &data, &mut values).map_err(|m| LensError::bad_file(path, format!("the matrix of layer {layer} {m}")))?;
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(LensError::bad_file(
                path,
                format!("the matrix of layer {layer} holds {} at [{}, {}]: a J-lens must be finite", values.get(i).copied().unwrap_or(f32::NAN), i / d, i % d),
            ));
        }
        let matrix = if from_checkpoint {
            let n = n_prompts as f32;
            values.iter_mut().for_each(|v| *v /= n);
            Matrix::from_f32(&values)
        } else {
            Matrix { dtype, data }
        };
        matrices.insert(layer, matrix);
    }
    Ok(JacobianLens { d_model: d, n_prompts, matrices, model_name, from_checkpoint, source: Some(path.to_path_buf()) })
}

/// The bookkeeping of a fit checkpoint ([`super::write::save_checkpoint`]): its counts and the
/// options its metadata records (`metadata` entries that are ints or strings, as text).
pub fn checkpoint_info(path: &Path) -> Result<(super::write::CheckpointInfo, BTreeMap<String, String>)> {
    let header = pytorch_reader::PytorchReader::read_pickle_data(path, None)
        .map_err(|e| LensError::bad_file(path, format!("cannot read this checkpoint's pickle: {e}")))?;
    let PickleValue::Dict(header) = header else {
        return Err(LensError::bad_file(path, "not a J-lens fit checkpoint: its pickle is not a dict"));
    };
    let need = |key: &str| -> Result<u64> {
        int_of(header.get(key))
            .and_then(|v| u64::try_from(v).ok())
            .ok_or_else(|| LensError::bad_file(path, format!("not a J-lens fit checkpoint: no {key} (a non-negative integer)")))
    };
    let info = super::write::CheckpointInfo {
        n_done: need("n_done")?,
        next_idx: need("next_idx")?,
        target_layer: need("target_layer")? as usize,
        skip_first: need("skip_first")? as usize,
    };
    let mut meta = BTreeMap::new();
    if let Some(PickleValue::Dict(m)) = header.get("metadata") {
        for (k, v) in m {
            match v {
                PickleValue::String(s) => {
                    meta.insert(k.clone(), s.clone());
                }
                PickleValue::Int(i) => {
                    meta.insert(k.clone(), i.to_string());
                }
                _ => {}
            }
        }
    }
    Ok((info, meta))
}
