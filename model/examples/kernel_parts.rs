//! Splits the lens kernel's time into its GEMM and its fold (a tuning aid, not a test):
//! `cargo run --release -p lens_model --example kernel_parts -- ROWS [CHUNK] [REPEAT]`.
//! Times, alternately: the reference (one all-core GEMM in 4096-column blocks), the kernel's GEMM
//! skeleton alone (the same blocks and chunks, no fold) and the whole kernel.

use std::time::Instant;

use lens_model::error::Progress;
use lens_model::lens::kernel::{Decoder, DecoderKind, logits_block};
use lens_model::lens::metrics::{KernelSpec, run_kernel};
use rayon::prelude::*;

fn main() -> lens_model::Result<()> {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let rows = args.first().copied().unwrap_or(832);
    let chunk = args.get(1).copied().unwrap_or(256);
    let repeat = args.get(2).copied().unwrap_or(7);
    let (d, v, s_n) = (768usize, 50257usize, 13usize);
    let n_pos = rows.div_ceil(s_n);
    let rows = n_pos * s_n;
    let mut seed = 0x1234_5678_9abc_def0u64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    let w_u: Vec<f32> = (0..v * d).map(|_| rnd() * 0.2).collect();
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
    let xs: Vec<f32> = (0..rows * d).map(|_| rnd()).collect();
    let targets: Vec<u32> = (0..n_pos * 3).map(|i| (i * 7919 % v) as u32).collect();
    let spec = KernelSpec { n_pos, n_sites: s_n, final_site: s_n - 1, input_site: 0, k: 10, n_targets: 3, chunk };
    let threads = rayon::current_num_threads();
    let flops = 2.0 * rows as f64 * d as f64 * v as f64;

    let w_all = dec.w_u.to_f32();
    let mut out = vec![0f32; rows * 4096];
    let mut reference = || -> lens_model::Result<f64> {
        let t = Instant::now();
        let mut v0 = 0;
        while v0 < v {
            let c = 4096.min(v - v0);
            logits_block(&xs, w_all.get(v0 * d..(v0 + c) * d).unwrap_or_default(), d, out.get_mut(..rows * c).unwrap_or_default(), true)?;
            v0 += c;
        }
        Ok(t.elapsed().as_secs_f64())
    };
    let per = n_pos.div_ceil(threads);
    let skeleton = || -> lens_model::Result<f64> {
        let t = Instant::now();
        (0..threads).into_par_iter().try_for_each(|b| -> lens_model::Result<()> {
            let (p0, p1) = ((b * per).min(n_pos), ((b + 1) * per).min(n_pos));
            let x = xs.get(p0 * s_n * d..p1 * s_n * d).unwrap_or_default();
            let rb = (p1 - p0) * s_n;
            let mut buf = vec![0f32; rb * chunk];
            let mut v0 = 0;
            while v0 < v {
                let c = chunk.min(v - v0);
                logits_block(x, w_all.get(v0 * d..(v0 + c) * d).unwrap_or_default(), d, buf.get_mut(..rb * c).unwrap_or_default(), false)?;
                v0 += c;
            }
            Ok(())
        })?;
        Ok(t.elapsed().as_secs_f64())
    };
    let kernel = || -> lens_model::Result<f64> {
        let t = Instant::now();
        run_kernel(&xs, &targets, &dec, &spec, &Progress::default())?;
        Ok(t.elapsed().as_secs_f64())
    };
    let (mut r, mut s, mut k) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..repeat {
        r.push(reference()?);
        s.push(skeleton()?);
        k.push(kernel()?);
    }
    let med = |mut x: Vec<f64>| {
        x.sort_by(f64::total_cmp);
        x.get(x.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let (r, s, k) = (med(r), med(s), med(k));
    println!("rows {rows} chunk {chunk} threads {threads}");
    println!("reference {:.1} ms {:.1} GFLOP/s", r * 1e3, flops / r / 1e9);
    println!("skeleton  {:.1} ms {:.1} GFLOP/s  ratio {:.3}", s * 1e3, flops / s / 1e9, r / s);
    println!("kernel    {:.1} ms {:.1} GFLOP/s  ratio {:.3}", k * 1e3, flops / k / 1e9, r / k);
    Ok(())
}
