//! The report as numpy's own `.npz` (a zip of `.npy` arrays): fixed dtypes, NaN (floats) or −1
//! (integers) where a value is unknown, token strings as `<U` arrays. `numpy.load(path)` gives every
//! metric as a plain array — no `dtype=object` from JSON's `null`s, and readable tokens without a
//! tokenizer.

use std::io::Write;
use std::path::Path;

use crate::error::{LensError, Result};
use crate::output::report::LensReport;

/// One array's values (written as numpy's `<f8`, `<f4`, `<i8`, `|b1` or `<U{width}`).
pub enum Data {
    /// float64.
    F64(Vec<f64>),
    /// float32.
    F32(Vec<f32>),
    /// int64.
    I64(Vec<i64>),
    /// bool.
    Bool(Vec<bool>),
    /// Fixed-width UTF-32 strings (`<U{width}`).
    Str(Vec<String>),
}

/// Characters of the longest string (at least 1): numpy's `<U` width.
fn str_width(v: &[String]) -> usize {
    v.iter().map(|s| s.chars().count()).max().unwrap_or(0).max(1)
}

impl Data {
    fn descr(&self) -> String {
        match self {
            Self::F64(_) => "<f8".into(),
            Self::F32(_) => "<f4".into(),
            Self::I64(_) => "<i8".into(),
            Self::Bool(_) => "|b1".into(),
            Self::Str(v) => format!("<U{}", str_width(v)),
        }
    }

    fn len(&self) -> usize {
        match self {
            Self::F64(v) => v.len(),
            Self::F32(v) => v.len(),
            Self::I64(v) => v.len(),
            Self::Bool(v) => v.len(),
            Self::Str(v) => v.len(),
        }
    }

    fn bytes(&self) -> Vec<u8> {
        match self {
            Self::F64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Self::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Self::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Self::Bool(v) => v.iter().map(|&b| u8::from(b)).collect(),
            Self::Str(v) => {
                let width = str_width(v);
                let mut out = Vec::with_capacity(v.len() * width * 4);
                for s in v {
                    let n = s.chars().count();
                    out.extend(s.chars().flat_map(|c| u32::from(c).to_le_bytes()));
                    out.extend(std::iter::repeat_n(0u8, (width - n) * 4));
                }
                out
            }
        }
    }
}

/// One `.npy` file: version 1.0 header (padded so the data starts at a multiple of 64), then data.
fn npy(shape: &[usize], data: &Data) -> Result<Vec<u8>> {
    let n: usize = shape.iter().product();
    if n != data.len() {
        return Err(LensError::invalid(format!("npz: shape {shape:?} holds {n} values, the array has {}", data.len())));
    }
    let dims = match shape {
        [] => "()".to_string(),
        [a] => format!("({a},)"),
        _ => format!("({})", shape.iter().map(usize::to_string).collect::<Vec<_>>().join(", ")),
    };
    let mut header = format!("{{'descr': '{}', 'fortran_order': False, 'shape': {dims}, }}", data.descr());
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let len = u16::try_from(header.len()).map_err(|_| LensError::invalid("npz: header too long"))?;
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend(len.to_le_bytes());
    out.extend(header.as_bytes());
    out.extend(data.bytes());
    Ok(out)
}

fn flat<T: Copy>(g: &[Vec<T>]) -> Vec<T> {
    g.iter().flatten().copied().collect()
}

/// Writes `report` to `path` as `.npz` (written beside and renamed into place: a failure leaves no
/// half-written file). `token_text(id)` is a token's exact text (`" plasma"`), for the top-1 and
/// top-k string arrays.
///
/// Arrays (`S` sites, `P` positions, `K` top-k): `tokens_id` `[P]`, `tokens_text` (display),
/// `tokens_decoded` (exact), `tokens_special`, `sites` `[S]`, `top1_id` / `top1_text` /
/// `top1_logit` / `top1_prob` / `rank_of_final_top1` / `rank_of_next` (−1 at the last position) /
/// `rank_of_input` / `kl_to_final` / `kl_to_input` (NaN under `--final-only`) / `entropy` /
/// `nll_next` (NaN at the last position) / `final_top1_prob` `[S, P]`, `top_k_id` / `top_k_text` /
/// `top_k_logit` / `top_k_prob` `[S, P, K]`, `attribution_components` `[C]`,
/// `attribution_final_top1` / `attribution_next` `[C, P]`, with `lens --grad-x-act`
/// `gradient_x_activation_final_top1` / `gradient_x_activation_next` `[S, P]` (NaN at the last
/// position), with pins `pinned_id` `[N]`,
/// `pinned_text`, `pinned_rank` / `pinned_prob` / `pinned_logit` `[N, S, P]`; and 0-d strings
/// `schema`, `model`, `family`, `decoder`, `weights` (`f32`, `int8`, `int4`); `no_transport`
/// `[S]` (bool: the row was decoded as it is, the decoder has no transport for it — the J-lens's
/// embeddings, sub-blocks and unfitted layers) and, where one decoded, 0-d `tuned_lens` /
/// `jacobian_lens` (the lens's path).
pub fn write_report(report: &LensReport, path: &Path, token_text: &dyn Fn(u32) -> String) -> Result<()> {
    let (s, p) = (report.sites.len(), report.n_pos());
    let m = &report.metrics;
    let k = report.top_k.k;
    let mut arrays: Vec<(&str, Vec<usize>, Data)> = vec![
        ("schema", vec![], Data::Str(vec![report.schema.clone()])),
        ("model", vec![], Data::Str(vec![report.model.name.clone()])),
        ("family", vec![], Data::Str(vec![report.model.family.clone()])),
        ("decoder", vec![], Data::Str(vec![report.decoder.clone()])),
        ("weights", vec![], Data::Str(vec![report.weights().to_string()])),
        ("no_transport", vec![s], Data::Bool((0..s).map(|i| report.no_transport.contains(&i)).collect())),
        ("tokens_id", vec![p], Data::I64(report.tokens.iter().map(|t| i64::from(t.id)).collect())),
        ("tokens_text", vec![p], Data::Str(report.tokens.iter().map(|t| t.text.clone()).collect())),
        ("tokens_decoded", vec![p], Data::Str(report.tokens.iter().map(|t| t.decoded.clone()).collect())),
        ("tokens_special", vec![p], Data::Bool(report.tokens.iter().map(|t| t.special).collect())),
        ("sites", vec![s], Data::Str(report.sites.clone())),
        ("top1_id", vec![s, p], Data::I64(flat(&m.top1_id).into_iter().map(i64::from).collect())),
        ("top1_text", vec![s, p], Data::Str(flat(&m.top1_id).into_iter().map(token_text).collect())),
        ("top1_logit", vec![s, p], Data::F32(flat(&m.top1_logit))),
        ("top1_prob", vec![s, p], Data::F64(flat(&m.top1_prob))),
        ("rank_of_final_top1", vec![s, p], Data::I64(flat(&m.rank_of_final_top1).into_iter().map(i64::from).collect())),
        ("rank_of_next", vec![s, p], Data::I64(flat(&m.rank_of_next).into_iter().map(|r| r.map_or(-1, i64::from)).collect())),
        ("rank_of_input", vec![s, p], Data::I64(flat(&m.rank_of_input).into_iter().map(i64::from).collect())),
        ("kl_to_final", vec![s, p], Data::F64(flat(&m.kl_to_final))),
        ("kl_to_input", vec![s, p], Data::F64(flat(&m.kl_to_input))),
        ("entropy", vec![s, p], Data::F64(flat(&m.entropy))),
        ("nll_next", vec![s, p], Data::F64(flat(&m.nll_next).into_iter().map(|x| x.unwrap_or(f64::NAN)).collect())),
        ("top_k_id", vec![s, p, k], Data::I64(report.top_k.ids.iter().flatten().flatten().map(|&t| i64::from(t)).collect())),
        ("top_k_text", vec![s, p, k], Data::Str(report.top_k.ids.iter().flatten().flatten().map(|&t| token_text(t)).collect())),
        ("top_k_logit", vec![s, p, k], Data::F32(report.top_k.logits.iter().flatten().flatten().copied().collect())),
        ("top_k_prob", vec![s, p, k], Data::F64(report.top_k.probs.iter().flatten().flatten().copied().collect())),
    ];
    if m.final_top1_prob.len() == s {
        arrays.push(("final_top1_prob", vec![s, p], Data::F64(flat(&m.final_top1_prob))));
    }
    let a = &report.attribution;
    let c = a.components.len();
    for (name, lens) in [("tuned_lens", &report.run.tuned_lens), ("jacobian_lens", &report.run.jacobian_lens)] {
        if let Some(l) = lens {
            arrays.push((name, vec![], Data::Str(vec![l.clone()])));
        }
    }
    arrays.push(("attribution_components", vec![c], Data::Str(a.components.clone())));
    if a.final_top1.len() == c && a.next.len() == c {
        arrays.push(("attribution_final_top1", vec![c, p], Data::F64(flat(&a.final_top1))));
        arrays.push(("attribution_next", vec![c, p], Data::F64(flat(&a.next).into_iter().map(|x| x.unwrap_or(f64::NAN)).collect())));
    }
    if let Some(g) = &report.gradient_x_activation {
        arrays.push(("gradient_x_activation_final_top1", vec![s, p], Data::F64(flat(&g.final_top1))));
        arrays.push(("gradient_x_activation_next", vec![s, p], Data::F64(flat(&g.next).into_iter().map(|x| x.unwrap_or(f64::NAN)).collect())));
    }
    if let Some(pin) = &report.pinned {
        let n = pin.tokens.len();
        arrays.push(("pinned_id", vec![n], Data::I64(pin.tokens.iter().map(|t| i64::from(t.id)).collect())));
        arrays.push(("pinned_text", vec![n], Data::Str(pin.tokens.iter().map(|t| t.decoded.clone()).collect())));
        arrays.push(("pinned_rank", vec![n, s, p], Data::I64(pin.rank.iter().flatten().flatten().map(|&r| i64::from(r)).collect())));
        arrays.push(("pinned_prob", vec![n, s, p], Data::F64(pin.prob.iter().flatten().flatten().copied().collect())));
        arrays.push(("pinned_logit", vec![n, s, p], Data::F32(pin.logit.iter().flatten().flatten().copied().collect())));
    }
    arrays.push(("prediction_depth", vec![p], Data::I64(report.prediction_depth().into_iter().map(i64::from).collect())));
    if !report.groups.is_empty() {
        let g = report.groups.len();
        arrays.push(("group_name", vec![g], Data::Str(report.groups.iter().map(|x| x.name.clone()).collect())));
        // A group's tokens, exact text joined by '|' (their number varies from group to group).
        let joined = |x: &crate::output::report::GroupReport| x.tokens.iter().map(|t| t.decoded.as_str()).collect::<Vec<_>>().join("|");
        arrays.push(("group_tokens", vec![g], Data::Str(report.groups.iter().map(joined).collect())));
        arrays.push(("group_prob", vec![g, s, p], Data::F64(report.groups.iter().flat_map(|x| x.prob.cells().copied()).collect())));
        arrays.push(("group_best_rank", vec![g, s, p], Data::I64(report.groups.iter().flat_map(|x| x.best_rank.cells().map(|&r| i64::from(r))).collect())));
    }
    write_arrays(path, &arrays)
}

/// Writes `arrays` (name, shape, values) to `path` as `.npz`, replacing it only once whole.
pub fn write_arrays(path: &Path, arrays: &[(&str, Vec<usize>, Data)]) -> Result<()> {
    crate::files::write_replacing(path, |tmp| {
        let file = std::fs::File::create(tmp).map_err(|e| LensError::io(tmp, e))?;
        let mut zip = zip::ZipWriter::new(std::io::BufWriter::new(file));
        let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored).large_file(true);
        for (name, shape, data) in arrays {
            let bytes = npy(shape, data).map_err(|e| LensError::invalid(format!("{name}: {e}")))?;
            zip.start_file(format!("{name}.npy"), options).map_err(|e| LensError::invalid(format!("cannot write {}: {e}", tmp.display())))?;
            zip.write_all(&bytes).map_err(|e| LensError::io(tmp, e))?;
        }
        let mut inner = zip.finish().map_err(|e| LensError::invalid(format!("cannot write {}: {e}", tmp.display())))?;
        inner.flush().map_err(|e| LensError::io(tmp, e))
    })
}
