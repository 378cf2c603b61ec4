//! The translators' parameters: read from `params.pt` (a PyTorch zip-pickle, checked by
//! [`crate::source::checkpoint::pickle_globals`] and read by pytorch-reader, never run) or
//! `params.safetensors`; written as a `params.pt` that `torch.load` (also with
//! `weights_only=True`) and `TunedLens.from_model_and_pretrained` read.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::Path;

use crate::error::{LensError, Result};
pub use crate::lens::torch_save::write_atomic;
use crate::lens::torch_save::{op, put_str, put_tensor, write_zip};
use crate::lens::tuned_lens::config::{CONFIG_FILE, TunedLensConfig};
use crate::source::checkpoint::{ElemType, decode_f32};

/// The PyTorch parameters file.
pub const PARAMS_PT: &str = "params.pt";
/// The safetensors parameters file.
pub const PARAMS_SAFETENSORS: &str = "params.safetensors";

/// One translator tensor as read (its shape checked by [`check_meta`]): type, bytes.
struct Raw {
    dtype: ElemType,
    data: Vec<u8>,
}

/// The translator a key names: `{i}.weight` / `{i}.bias`, or with the module's name in front
/// (`layer_translators.0.weight`) → `(i, is_weight)`; anything else (an `unembed.*` copy) is `None`.
fn translator_of(key: &str) -> Option<(usize, bool)> {
    let bare = key.strip_prefix("layer_translators.").unwrap_or(key);
    let (i, what) = bare.split_once('.')?;
    let i = i.parse::<usize>().ok()?;
    match what {
        "weight" => Some((i, true)),
        "bias" => Some((i, false)),
        _ => None,
    }
}

/// Checks a tensor's name and shape before anything of it is read: its translator index is below
/// the model's layer count (a key like `999999999999.weight` would otherwise size the translator
/// list) and its shape is the one config.json's `d_model` gives. `None`: not a translator's.
fn check_meta(path: &Path, key: &str, shape: &[usize], config: &TunedLensConfig) -> Result<Option<(usize, bool)>> {
    let Some((i, is_weight)) = translator_of(key) else { return Ok(None) };
    let max = config.num_hidden_layers;
    if i >= max {
        return Err(LensError::bad_file(path, format!("tensor {key} names translator {i}; config.json's model has {max} layers (translators 0..{max})")));
    }
    let d = config.d_model;
    let want: &[usize] = if is_weight { &[d, d] } else { &[d] };
    if shape != want {
        let what = if is_weight { "weight" } else { "bias" };
        return Err(LensError::bad_file(path, format!("{i}.{what} has shape {shape:?}; config.json's d_model {d} needs {want:?}")));
    }
    Ok(Some((i, is_weight)))
}

/// The translators' tensors of a `params.pt`: names, shapes and sizes checked before any is read
/// (a view larger than the whole file — a storage repeated by a zero stride — is refused, not
/// expanded); other tensors are never read.
fn read_pt(path: &Path, config: &TunedLensConfig) -> Result<HashMap<(usize, bool), Raw>> {
    let tensors = crate::source::checkpoint::open_pytorch(path)?;
    let mut out = HashMap::new();
    for (key, t) in tensors {
        let Some(slot) = check_meta(path, &key, t.shape(), config)? else { continue };
        let (dtype, data) = crate::source::checkpoint::read_pytorch_tensor(path, &key, &t)?;
        out.insert(slot, Raw { dtype, data });
    }
    Ok(out)
}

fn read_safetensors(path: &Path, config: &TunedLensConfig) -> Result<HashMap<(usize, bool), Raw>> {
    let bytes = std::fs::read(path).map_err(|e| LensError::io(path, e))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| LensError::bad_file(path, format!("not a valid safetensors file (truncated?): {e}")))?;
    let mut out = HashMap::new();
    for (key, view) in st.tensors() {
        let Some(slot) = check_meta(path, &key, view.shape(), config)? else { continue };
        let dtype = match view.dtype() {
            safetensors::Dtype::F32 => ElemType::F32,
            safetensors::Dtype::F16 => ElemType::F16,
            safetensors::Dtype::BF16 => ElemType::BF16,
            other => return Err(LensError::bad_file(path, format!("tensor {key} has dtype {other:?}; expected F32, F16 or BF16"))),
        };
        out.insert(slot, Raw { dtype, data: view.data().to_vec() });
    }
    Ok(out)
}

/// Translator weights `[n][d·d]` and biases `[n][d]`.
pub type Translators = (Vec<Vec<f32>>, Vec<Vec<f32>>);

/// Reads the translators of the lens in `dir`.
pub fn read(dir: &Path, config: &TunedLensConfig) -> Result<Translators> {
    let (path, found) = if dir.join(PARAMS_PT).is_file() {
        let p = dir.join(PARAMS_PT);
        let r = read_pt(&p, config)?;
        (p, r)
    } else if dir.join(PARAMS_SAFETENSORS).is_file() {
        let p = dir.join(PARAMS_SAFETENSORS);
        let r = read_safetensors(&p, config)?;
        (p, r)
    } else {
        return Err(LensError::bad_file(dir, format!("no {PARAMS_PT} or {PARAMS_SAFETENSORS} in this tuned lens folder")));
    };
    let n = found.keys().map(|(i, _)| i + 1).max().unwrap_or(0);
    if n == 0 {
        return Err(LensError::bad_file(&path, "holds no translators (expected tensors named 0.weight, 0.bias, 1.weight, …)"));
    }
    let d = config.d_model;
    let mut weights = Vec::with_capacity(n);
    let mut biases = Vec::with_capacity(n);
    for i in 0..n {
        let w = found.get(&(i, true)).ok_or_else(|| LensError::bad_file(&path, format!("translator {i} has no weight ({i}.weight is missing)")))?;
        let mut wv = Vec::with_capacity(d * d);
        decode_f32(w.dtype, &w.data, &mut wv).map_err(|m| LensError::bad_file(&path, format!("{i}.weight {m}")))?;
        let mut bv = Vec::with_capacity(d);
        match found.get(&(i, false)) {
            Some(b) => decode_f32(b.dtype, &b.data, &mut bv).map_err(|m| LensError::bad_file(&path, format!("{i}.bias {m}")))?,
            None if config.bias => {
                return Err(LensError::bad_file(&path, format!("translator {i} has no bias ({i}.bias is missing) but config.json says bias: true")));
            }
            None => bv.resize(d, 0.0),
        }
        if wv.len() != d * d || bv.len() != d {
            return Err(LensError::bad_file(
                &path,
                format!("translator {i} holds {} and {} values, expected {} and {d} (truncated?)", wv.len(), bv.len(), d * d),
            ));
        }
        weights.push(wv);
        biases.push(bv);
    }
    Ok((weights, biases))
}

/// The pickle (protocol 2) of `OrderedDict([(name, float32 tensor), …])` as `torch.save` writes
/// it: each tensor is `torch._utils._rebuild_tensor_v2(storage, 0, shape, stride, False,
/// OrderedDict())` with its storage a persistent id `("storage", torch.FloatStorage, key, "cpu",
/// numel)`; storage `key` is the tensor's index. Only the globals a state dict needs appear.
pub fn state_dict_pickle(tensors: &[(String, Vec<usize>)]) -> Result<Vec<u8>> {
    let mut p = vec![op::PROTO, 2];
    p.push(op::GLOBAL);
    p.extend_from_slice(b"collections\nOrderedDict\n");
    p.push(op::EMPTY_TUPLE);
    p.push(op::REDUCE);
    p.push(op::MARK);
    for (key, (name, shape)) in tensors.iter().enumerate() {
        put_str(&mut p, name);
        put_tensor(&mut p, key, shape, false)?;
    }
    p.push(op::SETITEMS);
    p.push(op::STOP);
    Ok(p)
}

/// Writes `params.pt` (translators as `{i}.weight`, `{i}.bias`, float32) and `config.json` into
/// `dir` (created if needed), each file replaced atomically, parameters first.
pub fn save(dir: &Path, config: &TunedLensConfig, weights: &[Vec<f32>], biases: &[Vec<f32>]) -> Result<()> {
    let d = config.d_model;
    if weights.len() != biases.len() || weights.iter().any(|w| w.len() != d * d) || biases.iter().any(|b| b.len() != d) {
        return Err(LensError::invalid("internal: the tuned lens's translators do not match its width"));
    }
    std::fs::create_dir_all(dir).map_err(|e| LensError::io(dir, e))?;
    let mut tensors: Vec<(String, Vec<usize>, &[f32])> = Vec::with_capacity(2 * weights.len());
    for (i, (w, b)) in weights.iter().zip(biases).enumerate() {
        tensors.push((format!("{i}.weight"), vec![d, d], w));
        if config.bias {
            tensors.push((format!("{i}.bias"), vec![d], b));
        }
    }
    let pickle = state_dict_pickle(&tensors.iter().map(|(n, s, _)| (n.clone(), s.clone())).collect::<Vec<_>>())?;
    let storages: Vec<Vec<u8>> = tensors.iter().map(|(_, _, values)| values.iter().flat_map(|v| v.to_le_bytes()).collect()).collect();
    let refs: Vec<&[u8]> = storages.iter().map(Vec::as_slice).collect();
    write_zip(&dir.join(PARAMS_PT), "params", &pickle, &refs)?;
    let text = serde_json::to_string_pretty(&config.to_json()).map_err(|e| LensError::invalid(e.to_string()))?;
    write_atomic(&dir.join(CONFIG_FILE), |f| f.write_all(text.as_bytes()))
}
