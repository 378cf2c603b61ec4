//! Vectorisable inner loops of the metric kernel, compiled twice: for the baseline target and,
//! on x86-64, with AVX2+FMA (chosen at run time). Plain Rust that LLVM vectorises; no intrinsics.

const LANES: usize = 16;

/// e^x for x <= 0 (Cephes `expf` polynomial, ~1 ulp); inputs below -87 give ~1e-38 instead of 0.
#[inline(always)]
pub fn exp_nonpos(x: f32) -> f32 {
    let x = x.max(-87.0);
    let n = (x * std::f32::consts::LOG2_E + 0.5).floor();
    // 2^n from the bits of n + 1.5·2^23 (n is an integer in -126..=0): no float-to-int conversion.
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 5e-1;
    let y = p * r * r + r + 1.0;
    let biased = (n + 12_582_912.0).to_bits().wrapping_sub(0x4B40_0000).wrapping_add(127);
    y * f32::from_bits(biased << 23)
}

/// tanh(x) in f32 (Cephes `tanhf`: an odd polynomial below 0.625, `1 − 2/(e^{2|x|} + 1)` above,
/// through [`exp_nonpos`]; ~2 ulp), written without branches so that a loop over it vectorises.
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    let a = x.abs();
    let z = x * x;
    let small = ((((-5.704_988_7e-3 * z + 2.063_909e-2) * z - 5.373_971_6e-2) * z + 1.333_144_2e-1) * z - 3.333_328e-1) * z * x + x;
    // e = e^{−2|x|} ∈ (0, 0.29]: tanh|x| = 1 − 2e/(1 + e). The small term is computed to a few
    // ulp of itself and subtracted last, so near saturation the result is within half an ulp
    // of 1's spacing: ties between saturated logits fall as a correctly rounded tanh makes them.
    let e = exp_nonpos(-2.0 * a);
    let large = (1.0 - 2.0 * e / (1.0 + e)).copysign(x);
    if a < 0.625 { small } else { large }
}

/// `c · tanh(x / c)` over a slice in place (Gemma 2's final soft cap).
#[inline(always)]
fn softcap_impl(l: &mut [f32], c: f32) {
    let inv = 1.0 / c;
    for v in l.iter_mut() {
        *v = c * tanh(*v * inv);
    }
}

#[inline(always)]
fn max_impl(l: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut it = l.chunks_exact(LANES);
    for c in &mut it {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = a.max(v);
        }
    }
    let mut m = it.remainder().iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v));
    for a in acc {
        m = m.max(a);
    }
    m
}

/// Writes `e[i] = exp(l[i] - m)` and returns `(Σ e, Σ e·(l - m))`.
#[inline(always)]
fn exp_sums_impl(l: &[f32], m: f32, e: &mut [f32]) -> (f64, f64) {
    let mut s0 = [0f32; LANES];
    let mut s1 = [0f32; LANES];
    let mut li = l.chunks_exact(LANES);
    let mut ei = e.chunks_exact_mut(LANES);
    for (lc, ec) in (&mut li).zip(&mut ei) {
        for (((&v, o), a0), a1) in lc.iter().zip(ec.iter_mut()).zip(s0.iter_mut()).zip(s1.iter_mut()) {
            let d = v - m;
            let x = exp_nonpos(d);
            *o = x;
            *a0 += x;
            *a1 += x * d;
        }
    }
    let (mut t0, mut t1) = (0f64, 0f64);
    for (&v, o) in li.remainder().iter().zip(ei.into_remainder().iter_mut()) {
        let d = v - m;
        let x = exp_nonpos(d);
        *o = x;
        t0 += f64::from(x);
        t1 += f64::from(x * d);
    }
    (t0 + s0.iter().map(|&v| f64::from(v)).sum::<f64>(), t1 + s1.iter().map(|&v| f64::from(v)).sum::<f64>())
}

/// Like [`exp_sums_impl`], and also counts the elements strictly greater than each of `thr`.
#[inline(always)]
fn exp_sums_counts_impl(l: &[f32], m: f32, e: &mut [f32], thr: [f32; 3]) -> (f64, f64, [u32; 3]) {
    let mut s0 = [0f32; LANES];
    let mut s1 = [0f32; LANES];
    let mut c0 = [0u32; LANES];
    let mut c1 = [0u32; LANES];
    let mut c2 = [0u32; LANES];
    let mut li = l.chunks_exact(LANES);
    let mut ei = e.chunks_exact_mut(LANES);
    for (lc, ec) in (&mut li).zip(&mut ei) {
        for i in 0..LANES {
            let (Some(&v), Some(o)) = (lc.get(i), ec.get_mut(i)) else { continue };
            let d = v - m;
            let x = exp_nonpos(d);
            *o = x;
            if let (Some(a0), Some(a1), Some(k0), Some(k1), Some(k2)) = (s0.get_mut(i), s1.get_mut(i), c0.get_mut(i), c1.get_mut(i), c2.get_mut(i)) {
                *a0 += x;
                *a1 += x * d;
                *k0 += u32::from(v > thr[0]);
                *k1 += u32::from(v > thr[1]);
                *k2 += u32::from(v > thr[2]);
            }
        }
    }
    let (mut t0, mut t1) = (0f64, 0f64);
    let mut counts = [0u32; 3];
    for (&v, o) in li.remainder().iter().zip(ei.into_remainder().iter_mut()) {
        let d = v - m;
        let x = exp_nonpos(d);
        *o = x;
        t0 += f64::from(x);
        t1 += f64::from(x * d);
        for (c, t) in counts.iter_mut().zip(thr) {
            *c += u32::from(v > t);
        }
    }
    for (c, lanes) in counts.iter_mut().zip([c0, c1, c2]) {
        *c += lanes.iter().sum::<u32>();
    }
    (t0 + s0.iter().map(|&v| f64::from(v)).sum::<f64>(), t1 + s1.iter().map(|&v| f64::from(v)).sum::<f64>(), counts)
}

#[inline(always)]
fn count_greater_impl(l: &[f32], thr: f32) -> u32 {
    let mut acc = [0u32; LANES];
    let mut it = l.chunks_exact(LANES);
    for c in &mut it {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += u32::from(v > thr);
        }
    }
    acc.iter().sum::<u32>() + it.remainder().iter().map(|&v| u32::from(v > thr)).sum::<u32>()
}

/// Σ w·(a - b).
#[inline(always)]
fn weighted_diff_impl(w: &[f32], a: &[f32], b: &[f32]) -> f64 {
    let mut acc = [0f32; LANES];
    let mut wi = w.chunks_exact(LANES);
    let mut ai = a.chunks_exact(LANES);
    let mut bi = b.chunks_exact(LANES);
    for ((wc, ac), bc) in (&mut wi).zip(&mut ai).zip(&mut bi) {
        for (((s, &x), &y), &z) in acc.iter_mut().zip(wc).zip(ac).zip(bc) {
            *s += x * (y - z);
        }
    }
    let tail: f64 = wi.remainder().iter().zip(ai.remainder()).zip(bi.remainder()).map(|((&x, &y), &z)| f64::from(x * (y - z))).sum();
    tail + acc.iter().map(|&v| f64::from(v)).sum::<f64>()
}

macro_rules! dispatch {
    ($(#[$doc:meta])* $name:ident, $imp:ident, $avx:ident, ($($arg:ident : $ty:ty),*) -> $ret:ty) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        fn $avx($($arg: $ty),*) -> $ret {
            $imp($($arg),*)
        }
        $(#[$doc])*
        #[inline]
        pub fn $name($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            {
                if has_avx2() {
                    // SAFETY: AVX2 and FMA were detected on this CPU at run time.
                    return unsafe { $avx($($arg),*) };
                }
            }
            $imp($($arg),*)
        }
    };
}

#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma"))
}

dispatch!(
    /// Maximum of a slice (`-inf` when empty).
    max, max_impl, max_avx2, (l: &[f32]) -> f32);
dispatch!(
    /// Writes `e = exp(l - m)` and returns `(Σ e, Σ e·(l - m))` (f32 lanes, f64 total).
    exp_sums, exp_sums_impl, exp_sums_avx2, (l: &[f32], m: f32, e: &mut [f32]) -> (f64, f64));
dispatch!(
    /// [`exp_sums`] plus the number of elements strictly greater than each of three thresholds
    /// (NaN thresholds count nothing), in the same pass.
    exp_sums_counts, exp_sums_counts_impl, exp_sums_counts_avx2, (l: &[f32], m: f32, e: &mut [f32], thr: [f32; 3]) -> (f64, f64, [u32; 3]));
dispatch!(
    /// Number of elements strictly greater than `thr`.
    count_greater, count_greater_impl, count_greater_avx2, (l: &[f32], thr: f32) -> u32);
dispatch!(
    /// `c · tanh(x / c)` of every element, in place (Gemma 2's final soft cap; [`tanh`]).
    softcap, softcap_impl, softcap_avx2, (l: &mut [f32], c: f32) -> ());
dispatch!(
    /// Σ w·(a - b) over three equal-length slices.
    weighted_diff, weighted_diff_impl, weighted_diff_avx2, (w: &[f32], a: &[f32], b: &[f32]) -> f64);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    /// The largest relative error of `ours` against the f64 `reference` over `from..=to` in steps
    /// of `step` (points where the reference is 0 are skipped).
    fn worst_relative(ours: fn(f32) -> f32, reference: fn(f64) -> f64, from: f32, to: f32, step: f32) -> f64 {
        let mut worst = 0f64;
        let mut x = from;
        while x <= to {
            let want = reference(f64::from(x));
            if want != 0.0 {
                worst = worst.max((f64::from(ours(x)) - want).abs() / want.abs());
            }
            x += step;
        }
        worst
    }

    #[test]
    fn exp_matches_std_to_few_ulp() {
        let worst = worst_relative(exp_nonpos, f64::exp, -87.0, 0.0, 0.0137);
        assert!(worst < 4e-7, "relative error {worst}");
        assert_eq!(exp_nonpos(0.0), 1.0);
    }

    #[test]
    fn tanh_matches_std_to_few_ulp() {
        let worst = worst_relative(tanh, f64::tanh, -12.0, 12.0, 0.000_731);
        assert!(worst < 5e-7, "relative error {worst}");
        assert_eq!(tanh(0.0), 0.0);
        assert_eq!(tanh(40.0), 1.0);
        assert_eq!(tanh(-40.0), -1.0);
        let mut l: Vec<f32> = (0..1003).map(|i| (i as f32 - 500.0) * 0.37).collect();
        let want: Vec<f64> = l.iter().map(|&v| 30.0 * (f64::from(v) / 30.0).tanh()).collect();
        softcap(&mut l, 30.0);
        for (g, w) in l.iter().zip(&want) {
            assert!((f64::from(*g) - w).abs() <= 2e-6 * w.abs().max(1.0), "{g} vs {w}");
        }
    }

    #[test]
    fn kernels_match_scalar() {
        let l: Vec<f32> = (0..1003).map(|i| ((i * 7919) % 1000) as f32 * 0.01 - 5.0).collect();
        let m = l.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        assert_eq!(max(&l), m);
        let mut e = vec![0f32; l.len()];
        let (z, s) = exp_sums(&l, m, &mut e);
        let z_ref: f64 = l.iter().map(|&v| f64::from(v - m).exp()).sum();
        let s_ref: f64 = l.iter().map(|&v| f64::from(v - m).exp() * f64::from(v - m)).sum();
        assert!((z - z_ref).abs() / z_ref < 1e-6);
        assert!((s - s_ref).abs() / s_ref.abs() < 1e-6);
        assert_eq!(count_greater(&l, 0.0), l.iter().filter(|&&v| v > 0.0).count() as u32);
        let wd = weighted_diff(&e, &l, &e);
        let wd_ref: f64 = e.iter().zip(&l).map(|(&w, &a)| f64::from(w) * (f64::from(a) - f64::from(w))).sum();
        assert!((wd - wd_ref).abs() < 1e-3 * wd_ref.abs().max(1.0));
    }
}
