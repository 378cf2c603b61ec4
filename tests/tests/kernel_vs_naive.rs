//! The streaming metric kernel against a naive f64 implementation on hand-built arrays: exact
//! integer logits with many ties (ranks, top-k order), random logits (KL, entropy, NLL), and
//! vocabulary sizes that are not a multiple of the chunk.

use lens_model::error::Progress;
use lens_model::lens::kernel::{Decoder, DecoderKind};
use lens_model::lens::metrics::{KernelSpec, NO_TARGET, run_kernel};
use lens_tests::reference::{entropy, kl, log_sum_exp, nll, rank, top_k};

struct Case {
    dec: Decoder,
    prepared: Vec<f32>,
    n_pos: usize,
    n_sites: usize,
}

fn lcg(seed: &mut u64) -> u64 {
    *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    *seed >> 33
}

fn case(d: usize, v: usize, n_pos: usize, n_sites: usize, integer: bool, seed: u64) -> Case {
    let mut s = seed;
    let mut val = |scale: f32| -> f32 { if integer { (lcg(&mut s) % 7) as f32 - 3.0 } else { ((lcg(&mut s) % 20001) as f32 / 10000.0 - 1.0) * scale } };
    let w_u: Vec<f32> = (0..v * d).map(|_| val(1.0)).collect();
    let prepared: Vec<f32> = (0..n_pos * n_sites * d).map(|_| val(3.0)).collect();
    let dec = Decoder {
        kind: DecoderKind::Raw,
        d_model: d,
        d_vocab: v,
        eps: 1e-5,
        norm: lens_model::build::arch::Norm::LayerNorm,
        softcap: None,
        gamma: vec![1.0; d],
        beta: vec![0.0; d],
        w_u: w_u.into(),
        b_u: None,
    };
    Case { dec, prepared, n_pos, n_sites }
}

fn logits_of(c: &Case, row: usize) -> Vec<f64> {
    let d = c.dec.d_model;
    let x = &c.prepared[row * d..(row + 1) * d];
    let w = c.dec.w_u.to_f32();
    (0..c.dec.d_vocab).map(|t| x.iter().zip(&w[t * d..(t + 1) * d]).map(|(&a, &b)| f64::from(a) * f64::from(b)).sum()).collect()
}

fn check(c: &Case, chunk: usize, k: usize, exact: bool) {
    let n_t = 3;
    let mut targets = Vec::new();
    for p in 0..c.n_pos {
        targets.push((p * 37 % c.dec.d_vocab) as u32);
        targets.push(if p + 1 < c.n_pos { (p * 101 + 5) as u32 % c.dec.d_vocab as u32 } else { NO_TARGET });
        targets.push((c.dec.d_vocab - 1 - p) as u32);
    }
    let spec = KernelSpec { n_pos: c.n_pos, n_sites: c.n_sites, final_site: c.n_sites - 1, input_site: 0, k, n_targets: n_t, chunk };
    let rows = run_kernel(&c.prepared, &targets, &c.dec, &spec, &Progress::default()).unwrap();
    assert_eq!(rows.len(), c.n_pos * c.n_sites);
    // Exact-integer logits still go through f32 exp and f32 lane sums: 1e-6 relative.
    let tol = if exact { 1e-6 } else { 2e-6 };
    for p in 0..c.n_pos {
        let lf = logits_of(c, p * c.n_sites + c.n_sites - 1);
        let li = logits_of(c, p * c.n_sites);
        for s in 0..c.n_sites {
            let r = &rows[p * c.n_sites + s];
            let l = logits_of(c, p * c.n_sites + s);
            let at = format!("pos {p} site {s} chunk {chunk}");
            let want_top = top_k(&l, k);
            let got_ids: Vec<u32> = r.top.iter().map(|t| t.0).collect();
            let want_ids: Vec<u32> = want_top.iter().map(|t| t.0).collect();
            assert_eq!(got_ids, want_ids, "top-k ids at {at}");
            for ((_, gl), (_, wl)) in r.top.iter().zip(&want_top) {
                assert!((f64::from(*gl) - wl).abs() < 1e-4, "top-k logit at {at}");
            }
            assert!((r.lse - log_sum_exp(&l)).abs() < tol * 10.0, "lse at {at}: {} vs {}", r.lse, log_sum_exp(&l));
            assert!((r.entropy - entropy(&l)).abs() < tol * 10.0, "entropy at {at}: {} vs {}", r.entropy, entropy(&l));
            assert!((r.kl_to_final - kl(&lf, &l)).abs() < tol * 10.0, "KL final at {at}: {} vs {}", r.kl_to_final, kl(&lf, &l));
            assert!((r.kl_to_input - kl(&li, &l)).abs() < tol * 10.0, "KL input at {at}: {} vs {}", r.kl_to_input, kl(&li, &l));
            if s == c.n_sites - 1 {
                assert_eq!(r.kl_to_final, 0.0, "KL of the final row to itself");
            }
            for t in 0..n_t {
                let id = targets[p * n_t + t];
                if id == NO_TARGET {
                    assert_eq!(r.target_rank[t], 0);
                    assert!(r.target_logit[t].is_nan());
                    continue;
                }
                assert_eq!(r.target_rank[t] as usize, rank(&l, id as usize), "rank of target {t} ({id}) at {at}");
                let got_nll = r.lse - f64::from(r.target_logit[t]);
                assert!((got_nll - nll(&l, id as usize)).abs() < tol * 10.0, "nll at {at}");
            }
        }
    }
}

#[test]
fn integer_logits_with_ties_match_naive_exactly() {
    // Small integer weights: every logit is an exact small integer, so ties are everywhere.
    let c = case(4, 1037, 5, 4, true, 7);
    for chunk in [64, 100, 1037, 4096] {
        check(&c, chunk, 12, true);
    }
}

#[test]
fn random_logits_match_naive() {
    let c = case(24, 5003, 9, 3, false, 11);
    for chunk in [512, 333] {
        check(&c, chunk, 10, false);
    }
}

/// A quantized bundle's f16 unembedding: the kernel widens each chunk it reads; the naive
/// reference takes the same f16 values in f64. Sizes that are not a multiple of the chunk.
#[test]
fn f16_unembedding_matches_naive() {
    for (d, v, chunk, seed) in [(64, 1000, 256, 11), (48, 777, 100, 12)] {
        let mut c = case(d, v, 5, 4, false, seed);
        let half: Vec<half::f16> = c.dec.w_u.to_f32().iter().map(|&x| half::f16::from_f32(x)).collect();
        c.dec.w_u = half.into();
        assert!(c.dec.w_u.is_half() && c.dec.w_u.as_f32().is_none());
        check(&c, chunk, 5, false);
    }
}

#[test]
fn tie_ranks_do_not_push_tokens_down() {
    // Three tokens share the top logit; each has rank 1 and the top-k lists them by id.
    let d = 2;
    let mut w_u = vec![0f32; 10 * d];
    for t in [2usize, 5, 7] {
        w_u[t * d] = 1.0;
    }
    w_u[9 * d] = -1.0;
    let dec = Decoder {
        kind: DecoderKind::Raw,
        d_model: d,
        d_vocab: 10,
        eps: 1e-5,
        norm: lens_model::build::arch::Norm::LayerNorm,
        softcap: None,
        gamma: vec![1.0; d],
        beta: vec![0.0; d],
        w_u: w_u.into(),
        b_u: None,
    };
    let prepared = vec![2.0f32, 0.0];
    let spec = KernelSpec { n_pos: 1, n_sites: 1, final_site: 0, input_site: 0, k: 4, n_targets: 3, chunk: 3 };
    let rows = run_kernel(&prepared, &[5, 9, 0], &dec, &spec, &Progress::default()).unwrap();
    let r = &rows[0];
    assert_eq!(r.top.iter().map(|t| t.0).collect::<Vec<_>>(), vec![2, 5, 7, 0]);
    assert_eq!(r.target_rank, vec![1, 10, 4]);
}

/// Near ties at f32 rounding (issue 11, item 6): pairs of unembedding rows one rounding step
/// apart. The ranks are counted against each target's logit computed alone in f64, the top-k from
/// the f32 GEMM; a target in the top-k must rank as its top-k entry says (a site's own top-1
/// ranks 1), and its reported logit is the one its top-k entry shows.
#[test]
fn near_ties_rank_as_the_top_k_shows() {
    let (d, v, n_pos, n_sites, k) = (96, 2048, 24, 3, 8);
    let mut c = case(d, v, n_pos, n_sites, false, 77);
    let mut w = c.dec.w_u.to_f32().into_owned();
    let mut s = 5u64;
    for pair in 0..v / 2 {
        let (a, b) = (2 * pair * d, (2 * pair + 1) * d);
        for j in 0..d {
            w[b + j] = w[a + j];
        }
        // One element one or two f32 steps off: the two logits differ near f32 rounding.
        let j = (lcg(&mut s) as usize) % d;
        let steps = 1 + (lcg(&mut s) % 2) as u32;
        w[b + j] = f32::from_bits(w[b + j].to_bits().wrapping_add(steps));
    }
    c.dec.w_u = w.into();
    let spec = KernelSpec { n_pos, n_sites, final_site: n_sites - 1, input_site: 0, k, n_targets: 3, chunk: 256 };
    // First pass: every row's top-k. Second: targets = the final site's top-1 and top-2 (its
    // near-tie partner, mostly) and the top-1 of the input site.
    let first = run_kernel(&c.prepared, &vec![NO_TARGET; n_pos * 3], &c.dec, &spec, &Progress::default()).unwrap();
    let mut targets = Vec::new();
    for p in 0..n_pos {
        let fin = &first[p * n_sites + n_sites - 1].top;
        targets.extend([fin[0].0, fin[1].0, first[p * n_sites].top[0].0]);
    }
    let rows = run_kernel(&c.prepared, &targets, &c.dec, &spec, &Progress::default()).unwrap();
    let mut checked = 0;
    for p in 0..n_pos {
        for s in 0..n_sites {
            let r = &rows[p * n_sites + s];
            for t in 0..3 {
                let id = targets[p * 3 + t];
                if let Some(i) = r.top.iter().position(|e| e.0 == id) {
                    let g = r.top[i].1;
                    let above = r.top.iter().filter(|e| e.1 > g).count() as u32;
                    assert_eq!(r.target_rank[t], above + 1, "pos {p} site {s} target {t}: rank vs its top-k entry");
                    assert_eq!(r.target_logit[t], g, "pos {p} site {s} target {t}: logit vs its top-k entry");
                    checked += 1;
                } else {
                    assert!(r.target_rank[t] as usize > k, "pos {p} site {s} target {t}: outside the top-k ranks below it");
                }
            }
        }
        // The final site's own top-1 ranks 1.
        assert_eq!(rows[p * n_sites + n_sites - 1].target_rank[0], 1, "pos {p}");
    }
    assert!(checked > n_pos * 2, "{checked} targets in the top-k");
}
