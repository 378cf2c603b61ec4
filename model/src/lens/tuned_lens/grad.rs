//! The gradient of the tuned-lens objective through the decoder, streamed over the vocabulary.
//!
//! For a lens row `y` (the final norm's output for a translated residual) and its position's final
//! distribution `p`, the loss is `KL(p ‖ softmax(z))` with `z = cap(U y + b_U)`; its gradient is
//! `dL/dy = Σ_v (q_v − p_v) s_v U_v` with `s_v = cap'` (1 without a soft cap). Both sums run over
//! the vocabulary in chunks: `q` with an online softmax (the accumulated `Σ e^{z−m} s U` is
//! rescaled whenever the running maximum `m` grows, as flash attention does), `p` from the
//! position's final row, whose log-normaliser a first pass computes. So memory does not grow with
//! the vocabulary, and each chunk costs one GEMM forward and one backward (the `p` term is shared
//! by every layer of a position when there is no soft cap).

use rayon::prelude::*;

use crate::error::{LensError, Progress, Result, part};
use crate::lens::kernel::Decoder;

/// Positions per parallel task.
const BLOCK_POSITIONS: usize = 16;

/// Gradients and losses of a batch.
#[derive(Debug, Clone)]
pub struct KlGrad {
    /// `dL/dy` of every lens row, layer-major `[n_layers][n_pos][d]` (of the summed, not the mean, loss).
    pub d_y: Vec<f32>,
    /// `KL(final ‖ lens)` of every lens row in nats `[n_layers][n_pos]`.
    pub kl: Vec<f64>,
}

/// `out += c · w` // c: [rows, cols], w: [cols, d], out: [rows, d]
fn gemm_nn_add(c: &[f32], w: &[f32], d: usize, out: &mut [f32]) {
    let cols = w.len() / d;
    let rows = c.len() / cols.max(1);
    let lhs = faer::MatRef::from_row_major_slice(c, rows, cols);
    let rhs = faer::MatRef::from_row_major_slice(w, cols, d);
    let dst = faer::MatMut::from_row_major_slice_mut(out, rows, d);
    faer::linalg::matmul::matmul(dst, faer::Accum::Add, lhs, rhs, 1.0f32, faer::Par::Seq);
}

/// `KL(p ‖ q)` and its gradient for every lens row. `y_lens` holds `n_layers · n_pos` rows
/// (layer-major), `y_final` the `n_pos` final rows (both already through the final norm).
pub fn kl_grad(y_lens: &[f32], y_final: &[f32], n_layers: usize, dec: &Decoder, chunk: usize, progress: &Progress) -> Result<KlGrad> {
    let d = dec.d_model;
    let n_pos = y_final.len() / d.max(1);
    if d == 0 || y_final.len() != n_pos * d || y_lens.len() != n_layers * n_pos * d || chunk == 0 {
        return Err(LensError::invalid("internal: tuned-lens gradient: inconsistent sizes"));
    }
    let blocks: Vec<(usize, usize)> = (0..n_pos).step_by(BLOCK_POSITIONS).map(|p0| (p0, (p0 + BLOCK_POSITIONS).min(n_pos))).collect();
    let results: Vec<Result<(Vec<f32>, Vec<f64>)>> = blocks
        .par_iter()
        .map(|&(p0, p1)| {
            progress.check()?;
            let np = p1 - p0;
            // The block's rows: layer-major lens rows, then the final rows.
            let mut x = Vec::with_capacity((n_layers + 1) * np * d);
            for l in 0..n_layers {
                x.extend_from_slice(part(y_lens, (l * n_pos + p0) * d..(l * n_pos + p1) * d, "lens rows")?);
            }
            x.extend_from_slice(part(y_final, p0 * d..p1 * d, "final rows")?);
            block(&x, n_layers, np, dec, chunk)
        })
        .collect();
    let mut d_y = vec![0f32; n_layers * n_pos * d];
    let mut kl = vec![0f64; n_layers * n_pos];
    for (&(p0, p1), r) in blocks.iter().zip(results) {
        let (g, k) = r?;
        let np = p1 - p0;
        for l in 0..n_layers {
            crate::error::part_mut(&mut d_y, (l * n_pos + p0) * d..(l * n_pos + p1) * d, "gradient rows")?.copy_from_slice(part(
                &g,
                l * np * d..(l + 1) * np * d,
                "block gradient",
            )?);
            crate::error::part_mut(&mut kl, l * n_pos + p0..l * n_pos + p1, "losses")?.copy_from_slice(part(&k, l * np..(l + 1) * np, "block losses")?);
        }
    }
    Ok(KlGrad { d_y, kl })
}

/// The logits of rows `x` for the vocabulary chunk `uc` (tokens `c0..c0 + n`) into `z`: the GEMM,
/// the unembedding bias and the soft cap, whose derivative `1 − tanh²` goes into `slope` (same
/// layout) when capped.
fn chunk_logits(x: &[f32], uc: &[f32], c0: usize, n: usize, dec: &Decoder, z: &mut [f32], slope: &mut [f32]) -> Result<()> {
    // One task per block of positions: the product itself runs on this thread.
    crate::lens::kernel::logits_block(x, uc, dec.d_model, z, false)?;
    if let Some(b) = &dec.b_u {
        let bc = part(b, c0..c0 + n, "unembedding bias")?;
        for row in z.chunks_exact_mut(n) {
            for (v, &bv) in row.iter_mut().zip(bc) {
                *v += bv;
            }
        }
    }
    if let Some(c) = dec.softcap {
        for (v, sl) in z.iter_mut().zip(slope.iter_mut()) {
            let th = (*v / c).tanh();
            *v = c * th;
            *sl = 1.0 - th * th;
        }
    }
    Ok(())
}

/// One block of `np` positions: `x` holds `n_layers · np` lens rows then `np` final rows.
fn block(x: &[f32], n_layers: usize, np: usize, dec: &Decoder, chunk: usize) -> Result<(Vec<f32>, Vec<f64>)> {
    use crate::error::part_mut;
    use crate::lens::simd;
    let d = dec.d_model;
    let v = dec.d_vocab;
    // An f16 unembedding (a quantized bundle's) is widened one chunk at a time.
    let mut w_buf = Vec::new();
    let n_lens = n_layers * np;
    let rows = n_lens + np;
    let finals = part(x, n_lens * d..rows * d, "final rows")?;
    let capped = dec.softcap.is_some();
    let mut z = vec![0f32; rows * chunk];
    let mut slope = vec![0f32; if capped { rows * chunk } else { 0 }];
    let mut scratch = vec![0f32; chunk];
    // Pass 1: log-normaliser of every final row.
    let mut fm = vec![f64::NEG_INFINITY; np];
    let mut fs = vec![0f64; np];
    let mut c0 = 0;
    while c0 < v {
        let n = chunk.min(v - c0);
        let uc = dec.w_u.rows_f32(c0 * d..(c0 + n) * d, &mut w_buf).ok_or_else(|| LensError::invalid("unembedding too short"))?;
        let zf = part_mut(&mut z, 0..np * n, "logits")?;
        let sl = if capped { part_mut(&mut slope, 0..np * n, "slopes")? } else { &mut [][..] };
        chunk_logits(finals, uc, c0, n, dec, zf, sl)?;
        for ((row, m), s) in zf.chunks_exact(n).zip(fm.iter_mut()).zip(fs.iter_mut()) {
            let m_new = m.max(f64::from(simd::max(row)));
            let (e, _) = simd::exp_sums(row, m_new as f32, part_mut(&mut scratch, 0..n, "scratch")?);
            *s = *s * (*m - m_new).exp() + e;
            *m = m_new;
        }
        c0 += n;
    }
    let lse_f: Vec<f32> = fm.iter().zip(&fs).map(|(m, s)| (m + s.ln()) as f32).collect();
    // Pass 2: the lens rows' online softmax and both gradient sums.
    let b_rows = if capped { n_lens } else { np };
    let mut acc_a = vec![0f32; n_lens * d]; // Σ e^{z − m} s U (rescaled)
    let mut acc_b = vec![0f32; b_rows * d]; // Σ p s U
    let mut m = vec![f64::NEG_INFINITY; n_lens];
    let mut s = vec![0f64; n_lens];
    let mut spz = vec![0f64; n_lens]; // Σ p z
    let mut splp = vec![0f64; np]; // Σ p log p
    let mut coef = vec![0f32; (n_lens + b_rows) * chunk];
    let mut p = vec![0f32; np * chunk];
    let zeros = vec![0f32; chunk];
    let mut c0 = 0;
    while c0 < v {
        let n = chunk.min(v - c0);
        let uc = dec.w_u.rows_f32(c0 * d..(c0 + n) * d, &mut w_buf).ok_or_else(|| LensError::invalid("unembedding too short"))?;
        let zc = part_mut(&mut z, 0..rows * n, "logits")?;
        let sl = if capped { part_mut(&mut slope, 0..rows * n, "slopes")? } else { &mut [][..] };
        chunk_logits(x, uc, c0, n, dec, zc, sl)?;
        let zc: &[f32] = zc;
        let sl: &[f32] = sl;
        let pc = part_mut(&mut p, 0..np * n, "probabilities")?;
        // The final rows' probabilities and Σ p log p.
        for (j, (prow, lse)) in pc.chunks_exact_mut(n).zip(&lse_f).enumerate() {
            let zrow = part(zc, (n_lens + j) * n..(n_lens + j + 1) * n, "final logits")?;
            let (_, plp) = simd::exp_sums(zrow, *lse, prow);
            if let Some(a) = splp.get_mut(j) {
                *a += plp;
            }
        }
        let pc: &[f32] = pc;
        let coef = part_mut(&mut coef, 0..(n_lens + b_rows) * n, "coefficients")?;
        let (ce, cb) = coef.split_at_mut(n_lens * n);
        if !capped {
            cb.copy_from_slice(pc);
        }
        for r in 0..n_lens {
            let j = r % np;
            let zrow = part(zc, r * n..(r + 1) * n, "lens logits")?;
            let prow = part(pc, j * n..(j + 1) * n, "probabilities")?;
            let (Some(mr), Some(sr)) = (m.get(r).copied(), s.get(r).copied()) else { continue };
            let m_new = mr.max(f64::from(simd::max(zrow)));
            let erow = part_mut(ce, r * n..(r + 1) * n, "coefficients")?;
            let (e_sum, _) = simd::exp_sums(zrow, m_new as f32, erow);
            let pz = simd::weighted_diff(prow, zrow, part(&zeros, 0..n, "zeros")?);
            if capped {
                let srow = part(sl, r * n..(r + 1) * n, "slopes")?;
                for (e, &sv) in erow.iter_mut().zip(srow) {
                    *e *= sv;
                }
                for ((b, &pv), &sv) in part_mut(cb, r * n..(r + 1) * n, "coefficients")?.iter_mut().zip(prow).zip(srow) {
                    *b = pv * sv;
                }
            }
            let scale = if mr == f64::NEG_INFINITY { 0.0 } else { (mr - m_new).exp() };
            if scale != 1.0 {
                for a in part_mut(&mut acc_a, r * d..(r + 1) * d, "accumulator")? {
                    *a *= scale as f32;
                }
            }
            if let (Some(a), Some(b), Some(c)) = (m.get_mut(r), s.get_mut(r), spz.get_mut(r)) {
                *a = m_new;
                *b = sr * scale + e_sum;
                *c += pz;
            }
        }
        gemm_nn_add(ce, uc, d, &mut acc_a);
        gemm_nn_add(cb, uc, d, &mut acc_b);
        c0 += n;
    }
    let mut grad = vec![0f32; n_lens * d];
    let mut kl = vec![0f64; n_lens];
    for r in 0..n_lens {
        let j = r % np;
        let (Some(&mr), Some(&sr)) = (m.get(r), s.get(r)) else { continue };
        let b_row = if capped { r } else { j };
        let a = part(&acc_a, r * d..(r + 1) * d, "accumulator")?;
        let b = part(&acc_b, b_row * d..(b_row + 1) * d, "accumulator")?;
        for ((g, &av), &bv) in part_mut(&mut grad, r * d..(r + 1) * d, "gradient")?.iter_mut().zip(a).zip(b) {
            *g = (f64::from(av) / sr - f64::from(bv)) as f32;
        }
        // KL = Σ p log p − Σ p z + log Σ e^z.
        if let (Some(k), Some(lp), Some(pz)) = (kl.get_mut(r), splp.get(j), spz.get(r)) {
            *k = lp - pz + mr + sr.ln();
        }
    }
    Ok((grad, kl))
}
