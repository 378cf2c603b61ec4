//! The streaming metric kernel: one pass over the vocabulary in chunks, every metric folded in.
//!
//! Rows are `(position, site)` pairs, position-major (`row = pos * n_sites + site`). Positions are
//! split into blocks, one rayon task per block; each task walks the vocabulary in chunks of
//! `chunk` tokens, computes the chunk's logits with one f32 GEMM (faer), and folds them into
//! per-row accumulators: online log-sum-exp, Σ e·(l-m) for the entropy, a running top-k, counts of
//! logits above each target's logit (ranks), and Σ p_final·(l_final - l) / Σ p_input·(l_input - l)
//! for the two KL divergences. Memory is O(rows × chunk), never O(rows × d_vocab).

use rayon::prelude::*;

use crate::error::{LensError, Progress, Result, part, part_mut};
use crate::lens::kernel::Decoder;
use crate::lens::simd;

/// Width of the groups the running top-k skips at once.
const TOPK_GROUP: usize = 32;

/// Marks "no target here" in a target list.
pub const NO_TARGET: u32 = u32::MAX;

/// Shape and options of one kernel run.
#[derive(Debug, Clone)]
pub struct KernelSpec {
    /// Number of positions.
    pub n_pos: usize,
    /// Number of sites per position.
    pub n_sites: usize,
    /// Index of the final site (reference of `kl_to_final`).
    pub final_site: usize,
    /// Index of the input site (reference of `kl_to_input`).
    pub input_site: usize,
    /// Top-k size.
    pub k: usize,
    /// Targets per position whose rank and logit are tracked at every site.
    pub n_targets: usize,
    /// Vocabulary chunk size.
    pub chunk: usize,
}

/// Every metric of one `(position, site)` row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RowMetrics {
    /// log Σ exp(logits).
    pub lse: f64,
    /// Entropy of the softmax, nats.
    pub entropy: f64,
    /// Top-k `(id, logit)`, best first, ties by lower id.
    pub top: Vec<(u32, f32)>,
    /// Logit of each target (NaN where there is none).
    pub target_logit: Vec<f32>,
    /// Rank of each target, 1 = top (0 where there is none).
    pub target_rank: Vec<u32>,
    /// KL(final || this row), nats.
    pub kl_to_final: f64,
    /// KL(input || this row), nats.
    pub kl_to_input: f64,
}

impl RowMetrics {
    /// Probability of a logit under this row's softmax.
    pub fn prob(&self, logit: f32) -> f64 {
        (f64::from(logit) - self.lse).exp()
    }
}

/// One row's running sums after the whole vocabulary (the kernel's, or the lens graph's).
pub(crate) struct RowState {
    /// The running maximum logit.
    pub(crate) m: f32,
    /// Σ e^{l−m}.
    pub(crate) z: f64,
    /// Σ e^{l−m}·(l−m), for the entropy.
    pub(crate) s: f64,
    /// The top-k `(logit, id)`, best first.
    pub(crate) top: Vec<(f32, u32)>,
    /// Per target, the tokens above its exact logit (itself excluded).
    pub(crate) counts: Vec<u32>,
    /// Each target's logit, computed alone in f64 (rounded to f32): what the ranks count against.
    pub(crate) tlogit: Vec<f32>,
    /// Each target's logit as the chunk's GEMM computed it (NaN until its chunk is seen).
    pub(crate) tgemm: Vec<f32>,
    /// Σ e^{l_f−m_f}·(l_f − l) against the position's final row.
    pub(crate) kl_f: f64,
    /// The same against the position's input row.
    pub(crate) kl_i: f64,
}

fn insert_top(top: &mut Vec<(f32, u32)>, k: usize, v: f32, id: u32) {
    // Ids arrive in increasing order, so an equal value never beats an entry already held.
    let pos = top.iter().position(|&(tv, _)| v > tv).unwrap_or(top.len());
    if pos < k {
        top.insert(pos, (v, id));
        top.truncate(k);
    }
}

/// Runs the kernel. `prepared` holds the decoder inputs (`[n_pos * n_sites, d_model]`, row-major,
/// position-major); `targets` holds `n_targets` ids per position (`[n_pos * n_targets]`, or
/// [`NO_TARGET`]). Returns one [`RowMetrics`] per row, position-major.
pub fn run_kernel(prepared: &[f32], targets: &[u32], dec: &Decoder, spec: &KernelSpec, progress: &Progress) -> Result<Vec<RowMetrics>> {
    let d = dec.d_model;
    let s_n = spec.n_sites;
    let rows = spec.n_pos * s_n;
    if prepared.len() != rows * d || targets.len() != spec.n_pos * spec.n_targets || spec.final_site >= s_n || spec.input_site >= s_n || spec.chunk == 0 {
        return Err(LensError::invalid("metric kernel: inconsistent input sizes"));
    }
    if rows == 0 {
        return Ok(Vec::new());
    }
    let threads = rayon::current_num_threads().max(1);
    // Blocks of whole positions: enough blocks for every core, at most ~1024 rows each (so that a
    // block's chunk of logits, 1024 x 256 f32 = 1 MiB, stays in L2 between the GEMM and the fold;
    // LENS_BLOCK_ROWS overrides it for tuning).
    let max_rows = std::env::var("LENS_BLOCK_ROWS").ok().and_then(|v| v.parse::<usize>().ok()).unwrap_or(1024);
    // A multiple of the thread count, so that every core gets the same amount of work.
    let n_blocks = threads * rows.div_ceil(threads * max_rows.max(1)).max(1);
    let per_block = spec.n_pos.div_ceil(n_blocks).max(1);
    let blocks: Vec<(usize, usize)> = (0..spec.n_pos).step_by(per_block).map(|p0| (p0, (p0 + per_block).min(spec.n_pos))).collect();
    let n_chunks = dec.d_vocab.div_ceil(spec.chunk);
    let total_steps = (blocks.len() * n_chunks).max(1);
    let steps = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<Result<Vec<RowMetrics>>> = blocks
        .par_iter()
        .map(|&(p0, p1)| {
            let xs = part(prepared, p0 * s_n * d..p1 * s_n * d, "prepared rows")?;
            let ts = part(targets, p0 * spec.n_targets..p1 * spec.n_targets, "targets")?;
            run_block(xs, ts, p1 - p0, dec, spec, progress, &|| {
                let done = steps.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                if done.is_multiple_of(8) || done == total_steps {
                    progress.report("lens", done as f32 / total_steps as f32);
                }
            })
        })
        .collect();
    let mut out = Vec::with_capacity(rows);
    for r in results {
        out.extend(r?);
    }
    Ok(out)
}

/// The rank of a target (0 where there is none): 1 + the tokens counted above its f64 logit `exact`,
/// made consistent with the top-k, which holds the GEMM's f32 logits (`gemm` is the target's own):
/// a target in the top-k ranks 1 + the entries strictly above it there (every token above it is
/// there), so a site's own top-1 always ranks 1 even where another token is within f32 rounding
/// of it; one outside ranks below every entry strictly above its GEMM logit. A near tie decided
/// differently by the two computations can only still shift ranks beyond k.
fn target_rank(counted: u32, exact: f32, gemm: f32, id: u32, top: &[(f32, u32)]) -> u32 {
    if exact.is_nan() {
        return 0;
    }
    let above = |g: f32| top.iter().filter(|&&(v, _)| v > g).count() as u32;
    if gemm.is_nan() {
        return counted + 1;
    }
    if top.iter().any(|&(_, t)| t == id) { above(gemm) + 1 } else { (counted + 1).max(above(gemm) + 1) }
}

#[allow(clippy::too_many_arguments)]
fn run_block(xs: &[f32], ts: &[u32], n_pos: usize, dec: &Decoder, spec: &KernelSpec, progress: &Progress, tick: &dyn Fn()) -> Result<Vec<RowMetrics>> {
    let d = dec.d_model;
    let s_n = spec.n_sites;
    let rb = n_pos * s_n;
    let n_t = spec.n_targets;
    let c_max = spec.chunk;
    let mut state: Vec<RowState> = (0..rb)
        .map(|r| -> Result<RowState> {
            let p = r / s_n;
            let row = part(xs, r * d..(r + 1) * d, "prepared row")?;
            let tlogit = (0..n_t)
                .map(|t| match ts.get(p * n_t + t) {
                    Some(&id) if id != NO_TARGET && (id as usize) < dec.d_vocab => dec.logit(row, id),
                    _ => f32::NAN,
                })
                .collect();
            Ok(RowState {
                m: f32::NEG_INFINITY,
                z: 0.0,
                s: 0.0,
                top: Vec::with_capacity(spec.k + 1),
                counts: vec![0; n_t],
                tlogit,
                tgemm: vec![f32::NAN; n_t],
                kl_f: 0.0,
                kl_i: 0.0,
            })
        })
        .collect::<Result<_>>()?;
    let mut buf = vec![0f32; rb * c_max];
    let mut e_all = vec![0f32; s_n * c_max];
    // An f16 unembedding (a quantized bundle's) is widened one chunk at a time.
    let mut w_buf = Vec::new();
    let mut v0 = 0usize;
    while v0 < dec.d_vocab {
        progress.check()?;
        let c = c_max.min(dec.d_vocab - v0);
        let w = dec.w_u.rows_f32(v0 * d..(v0 + c) * d, &mut w_buf).ok_or_else(|| LensError::invalid("unembedding too short"))?;
        let out = buf.get_mut(..rb * c).ok_or_else(|| LensError::invalid("kernel buffer"))?;
        crate::lens::kernel::logits_block(xs, w, d, out, false)?;
        if let Some(b) = dec.b_u.as_ref().and_then(|b| b.get(v0..v0 + c)) {
            for row in out.chunks_exact_mut(c) {
                for (x, &bb) in row.iter_mut().zip(b) {
                    *x += bb;
                }
            }
        }
        if let Some(c) = dec.softcap {
            simd::softcap(out, c);
        }
        for (p, (logits_p, st_p)) in out.chunks_exact(s_n * c).zip(state.chunks_exact_mut(s_n)).enumerate() {
            let m_f_old = st_p.get(spec.final_site).map_or(f32::NEG_INFINITY, |s| s.m);
            let m_i_old = st_p.get(spec.input_site).map_or(f32::NEG_INFINITY, |s| s.m);
            for ((l, st), e) in logits_p.chunks_exact(c).zip(st_p.iter_mut()).zip(e_all.chunks_exact_mut(c_max)) {
                let e = part_mut(e, 0..c, "exp buffer")?;
                let mx = simd::max(l);
                if st.m == f32::NEG_INFINITY {
                    st.m = mx;
                } else if mx > st.m {
                    let scale = (f64::from(st.m) - f64::from(mx)).exp();
                    st.s = scale * (st.s + (f64::from(st.m) - f64::from(mx)) * st.z);
                    st.z *= scale;
                    st.m = mx;
                }
                // The first three targets are counted in the exp pass; more (pins) separately.
                let fused: [f32; 3] = std::array::from_fn(|t| st.tlogit.get(t).copied().unwrap_or(f32::NAN));
                let (z, s, fused_counts) = simd::exp_sums_counts(l, st.m, e, fused);
                st.z += z;
                st.s += s;
                let full = st.top.len() >= spec.k;
                if spec.k > 0 && (!full || st.top.last().is_some_and(|&(tv, _)| mx > tv)) {
                    // Only the 16-wide groups that hold a value above the current k-th best are
                    // looked at element by element (a vectorised count finds them).
                    let mut thr = if full { st.top.last().map_or(f32::NEG_INFINITY, |t| t.0) } else { f32::NEG_INFINITY };
                    for (g, group) in l.chunks(TOPK_GROUP).enumerate() {
                        if st.top.len() >= spec.k && simd::count_greater(group, thr) == 0 {
                            continue;
                        }
                        for (j, &v) in group.iter().enumerate() {
                            if st.top.len() < spec.k || v > thr {
                                insert_top(&mut st.top, spec.k, v, (v0 + g * TOPK_GROUP + j) as u32);
                                if st.top.len() >= spec.k {
                                    thr = st.top.last().map_or(f32::NEG_INFINITY, |t| t.0);
                                }
                            }
                        }
                    }
                }
                for t in 0..n_t {
                    let (Some(&thr), Some(&id)) = (st.tlogit.get(t), ts.get(p * n_t + t)) else { continue };
                    if thr.is_nan() {
                        continue;
                    }
                    let mut n = match fused_counts.get(t) {
                        Some(&n) => n,
                        None => simd::count_greater(l, thr),
                    };
                    if (v0..v0 + c).contains(&(id as usize))
                        && let Some(&x) = l.get(id as usize - v0)
                    {
                        if x > thr {
                            n -= 1; // the target itself never counts against its own rank
                        }
                        // Its logit as this GEMM computed it, the one its top-k entry shows.
                        if let Some(g) = st.tgemm.get_mut(t) {
                            *g = x;
                        }
                    }
                    if let Some(cnt) = st.counts.get_mut(t) {
                        *cnt += n;
                    }
                }
            }
            // KL accumulators: weights are the final / input rows' exp(l - m), rescaled if m moved.
            let (m_f, m_i) = (st_p.get(spec.final_site).map_or(0.0, |s| s.m), st_p.get(spec.input_site).map_or(0.0, |s| s.m));
            let sc_f = if m_f_old == f32::NEG_INFINITY { 0.0 } else { (f64::from(m_f_old) - f64::from(m_f)).exp() };
            let sc_i = if m_i_old == f32::NEG_INFINITY { 0.0 } else { (f64::from(m_i_old) - f64::from(m_i)).exp() };
            let lf = part(logits_p, spec.final_site * c..(spec.final_site + 1) * c, "final site's logits")?;
            let li = part(logits_p, spec.input_site * c..(spec.input_site + 1) * c, "input site's logits")?;
            let ef = part(&e_all, spec.final_site * c_max..spec.final_site * c_max + c, "final site's weights")?;
            let ei = part(&e_all, spec.input_site * c_max..spec.input_site * c_max + c, "input site's weights")?;
            for (s, (l, st)) in logits_p.chunks_exact(c).zip(st_p.iter_mut()).enumerate() {
                st.kl_f *= sc_f;
                st.kl_i *= sc_i;
                if s != spec.final_site {
                    st.kl_f += simd::weighted_diff(ef, lf, l);
                }
                if s != spec.input_site {
                    st.kl_i += simd::weighted_diff(ei, li, l);
                }
            }
        }
        tick();
        v0 += c;
    }
    finalise(&state, ts, spec)
}

/// Every row's metrics from its final sums: `state` holds whole positions (`spec.n_sites` rows
/// each, position-major), `ts` their targets (`spec.n_targets` per position).
pub(crate) fn finalise(state: &[RowState], ts: &[u32], spec: &KernelSpec) -> Result<Vec<RowMetrics>> {
    let (s_n, n_t) = (spec.n_sites, spec.n_targets);
    let lse_of = |st: &RowState| f64::from(st.m) + st.z.ln();
    let mut out = Vec::with_capacity(state.len());
    for (p, st_p) in state.chunks_exact(s_n.max(1)).enumerate() {
        let (Some(f), Some(i)) = (st_p.get(spec.final_site), st_p.get(spec.input_site)) else { continue };
        let (lse_f, z_f, lse_i, z_i) = (lse_of(f), f.z, lse_of(i), i.z);
        let ids = part(ts, p * n_t..(p + 1) * n_t, "targets")?;
        for st in st_p {
            let lse = lse_of(st);
            out.push(RowMetrics {
                lse,
                entropy: st.z.ln() - st.s / st.z,
                top: st.top.iter().map(|&(v, id)| (id, v)).collect(),
                target_logit: st.tlogit.iter().zip(&st.tgemm).map(|(&exact, &g)| if g.is_nan() { exact } else { g }).collect(),
                target_rank: st.counts.iter().zip(&st.tlogit).zip(&st.tgemm).zip(ids).map(|(((&n, l), &g), &id)| target_rank(n, *l, g, id, &st.top)).collect(),
                kl_to_final: st.kl_f / z_f - lse_f + lse,
                kl_to_input: st.kl_i / z_i - lse_i + lse,
            });
        }
    }
    Ok(out)
}
