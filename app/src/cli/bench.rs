//! `logit-lens bench`: load, forward and lens timings, and the lens's GFLOP/s against a plain
//! f32 GEMM of the same shape run in the same process (the practical ceiling).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Result, bail};
use clap::Args;
use lens_model::LensOptions;
use lens_model::error::Progress;

/// Options of `bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// A bundle or Hugging Face folder (default: the demo model).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Number of tokens (random ids, fixed seed).
    #[arg(long, default_value_t = 256)]
    tokens: usize,
    /// Add the `.attn` rows.
    #[arg(long)]
    subblocks: bool,
    /// Repetitions of forward and lens (the best is reported).
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Vocabulary chunk of the kernel.
    #[arg(long, default_value_t = 256)]
    chunk: usize,
    /// auto, cpu, cuda or directml.
    #[arg(long, default_value = "auto")]
    device: String,
}

/// Peak resident set size of this process in MiB (Linux), if known.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn best_of<T>(n: usize, mut f: impl FnMut() -> Result<T>) -> Result<(f64, T)> {
    let mut best = f64::INFINITY;
    let mut last = None;
    for _ in 0..n.max(1) {
        let t = Instant::now();
        let v = f()?;
        best = best.min(t.elapsed().as_secs_f64());
        last = Some(v);
    }
    match last {
        Some(v) => Ok((best, v)),
        None => bail!("nothing ran"),
    }
}

/// Runs the benchmark and prints its figures.
pub fn run(ort_lib: Option<&Path>, args: &BenchArgs) -> Result<()> {
    let t = Instant::now();
    let mut engine = super::open_engine(ort_lib, args.model.as_deref(), args.device.parse()?)?;
    let load_s = t.elapsed().as_secs_f64();
    let shape = engine.bundle.shape.clone();
    if args.tokens == 0 || args.tokens > shape.n_ctx {
        bail!("--tokens must be between 1 and the model's context ({})", shape.n_ctx);
    }
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let ids: Vec<u32> = (0..args.tokens)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % shape.d_vocab as u64) as u32
        })
        .collect();
    let (fwd_s, trace) = best_of(args.repeat, || Ok(engine.trace(&ids)?))?;
    let opts = LensOptions { subblocks: args.subblocks, chunk: args.chunk, ..LensOptions::default() };
    let (lens_s, report) = best_of(args.repeat, || Ok(engine.lens(&ids, &trace, &opts, &Progress::default())?))?;
    let rss_lens = peak_rss_mib();
    let rows = args.tokens * report.sites.len();
    let (d, v) = (shape.d_model, shape.d_vocab);
    let flops = 2.0 * rows as f64 * d as f64 * v as f64;

    // Reference: a plain f32 GEMM of the lens's shape, [rows, d] x [d, d_vocab], all cores,
    // in column blocks so that its output buffer stays small.
    let lhs: Vec<f32> = (0..rows * d).map(|i| ((i * 2_654_435_761usize) % 1000) as f32 * 1e-3 - 0.5).collect();
    let block = 4096usize;
    let mut out = vec![0f32; rows * block];
    let w_u = &engine.decoder.w_u;
    let mut reference = || -> Result<()> {
        let mut v0 = 0;
        while v0 < v {
            let c = block.min(v - v0);
            let w = w_u.get(v0 * d..(v0 + c) * d).unwrap_or_default();
            lens_model::lens::logits_block(&lhs, w, d, out.get_mut(..rows * c).unwrap_or_default(), true)?;
            v0 += c;
        }
        Ok(())
    };
    let (ref_s, ()) = best_of(args.repeat, &mut reference)?;
    // Paired runs: the lens and the reference back to back, the ratio of each pair. On a shared
    // machine whose speed drifts, the median of the pairs is steadier than the ratio of two bests.
    let mut pairs = Vec::with_capacity(args.repeat.max(1));
    for _ in 0..args.repeat.max(1) {
        let t = Instant::now();
        engine.lens(&ids, &trace, &opts, &Progress::default())?;
        let a = t.elapsed().as_secs_f64();
        let t = Instant::now();
        reference()?;
        pairs.push(t.elapsed().as_secs_f64() / a);
    }
    pairs.sort_by(f64::total_cmp);
    let median = pairs.get(pairs.len() / 2).copied().unwrap_or(f64::NAN);
    let lens_gflops = flops / lens_s / 1e9;
    let ref_gflops = flops / ref_s / 1e9;
    println!("model            {} ({} layers, d_model {}, d_vocab {})", engine.bundle.name, shape.n_layers, d, v);
    println!("provider         {}", engine.provider.active);
    println!("threads          {}", rayon::current_num_threads());
    println!("tokens x sites   {} x {} = {} rows", args.tokens, report.sites.len(), rows);
    println!("bundle load      {:.1} ms (runtime, session, W_U, consistency check)", load_s * 1e3);
    println!("forward          {:.1} ms", fwd_s * 1e3);
    println!("lens             {:.1} ms  ({:.1} GFLOP/s)", lens_s * 1e3, lens_gflops);
    println!("reference GEMM   {:.1} ms  ({:.1} GFLOP/s, same shape, faer, all cores)", ref_s * 1e3, ref_gflops);
    println!("lens / reference {:.3} (best of {} each)", lens_gflops / ref_gflops, args.repeat.max(1));
    println!(
        "paired ratio     {:.3} (median of {} back-to-back pairs; range {:.3}..{:.3})",
        median,
        pairs.len(),
        pairs.first().copied().unwrap_or(f64::NAN),
        pairs.last().copied().unwrap_or(f64::NAN)
    );
    if let Some(r) = rss_lens {
        println!("peak RSS         {r:.0} MiB (before the reference GEMM)");
    }
    Ok(())
}
