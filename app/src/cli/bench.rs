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
    /// --model and --device.
    #[command(flatten)]
    model: super::args::ModelArgs,
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
    /// What computes the lens: auto, kernel or graph (see `lens --lens-path`).
    #[arg(long, default_value = "auto", value_parser = super::args::parse_lens_path)]
    lens_path: lens_model::lens::graph::LensPath,
    /// Also time appending this many tokens to the `--tokens` prompt (the app's incremental edit:
    /// the old positions' lens is kept) against the full recompute, in this process.
    #[arg(long)]
    append: Option<usize>,
    /// Write the figures as JSON (`load_ms, forward_ms, lens_ms, reference_ms, ratio_best,
    /// ratio_paired, append_ms, full_ms, peak_rss_mb`).
    #[arg(long, value_name = "OUT.json")]
    json: Option<PathBuf>,
}

/// The figures `bench --json` writes.
#[derive(Debug, serde::Serialize)]
struct BenchFigures {
    load_ms: f64,
    forward_ms: f64,
    lens_ms: f64,
    reference_ms: f64,
    ratio_best: f64,
    ratio_paired: f64,
    append_ms: Option<f64>,
    full_ms: Option<f64>,
    peak_rss_mb: Option<f64>,
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
    let mut engine = super::open_engine(ort_lib, args.model.model.as_deref(), args.model.device)?;
    let load_s = t.elapsed().as_secs_f64();
    let shape = engine.bundle.shape.clone();
    let extra = args.append.unwrap_or(0);
    if args.tokens == 0 || args.tokens.checked_add(extra).is_none_or(|n| n > shape.n_ctx) {
        bail!("--tokens (plus --append) must be between 1 and the model's context ({})", shape.n_ctx);
    }
    if args.append == Some(0) {
        bail!("--append 0: append at least one token");
    }
    if let Some(j) = &args.json {
        crate::session::prompt::check_writable(j)?;
    }
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let all_ids: Vec<u32> = (0..args.tokens + extra)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % shape.d_vocab as u64) as u32
        })
        .collect();
    let ids = all_ids.get(..args.tokens).unwrap_or_default().to_vec();
    let (fwd_s, trace) = best_of(args.repeat, || Ok(engine.trace(&ids)?))?;
    let opts = LensOptions { subblocks: args.subblocks, chunk: args.chunk, path: args.lens_path, ..LensOptions::default() };
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
    // The reference multiplies by f32 rows, widened once here where the unembedding is f16.
    let w_u = engine.decoder.w_u.to_f32();
    let mut reference = || -> Result<()> {
        let mut v0 = 0;
        while v0 < v {
            let c = block.min(v - v0);
            let w = w_u.get(v0 * d..(v0 + c) * d).unwrap_or_default();
            lens_model::lens::kernel::logits_block(&lhs, w, d, out.get_mut(..rows * c).unwrap_or_default(), true)?;
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
    println!("weights          {}", engine.bundle.weights.name());
    println!("threads          {}", rayon::current_num_threads());
    println!("tokens x sites   {} x {} = {} rows", args.tokens, report.sites.len(), rows);
    println!("bundle load      {:.1} ms (runtime, session, W_U, consistency check)", load_s * 1e3);
    println!("forward          {:.1} ms", fwd_s * 1e3);
    println!("lens             {:.1} ms  ({:.1} GFLOP/s; {})", lens_s * 1e3, lens_gflops, report.run.lens_path);
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
    let (append_ms, full_ms) = match args.append {
        Some(n) => {
            let (append_s, full_s) = time_append(&mut engine, &ids, &all_ids, &report, &opts, args.repeat)?;
            let forward = if engine.bundle.kv_cache.is_some() {
                format!("forward of the {n} new tokens on the cache of {}", ids.len())
            } else {
                format!("forward of all {} tokens: this bundle has no key/value cache", all_ids.len())
            };
            println!("append {n:>4}      {:.1} ms  ({forward} + lens of the last {} positions)", append_s * 1e3, n + 1);
            println!("full recompute   {:.1} ms  (forward + lens of all {} positions)", full_s * 1e3, all_ids.len());
            println!("append / full    {:.3}", append_s / full_s);
            (Some(append_s * 1e3), Some(full_s * 1e3))
        }
        None => (None, None),
    };
    if let Some(path) = &args.json {
        let figures = BenchFigures {
            load_ms: load_s * 1e3,
            forward_ms: fwd_s * 1e3,
            lens_ms: lens_s * 1e3,
            reference_ms: ref_s * 1e3,
            ratio_best: lens_gflops / ref_gflops,
            ratio_paired: median,
            append_ms,
            full_ms,
            peak_rss_mb: rss_lens,
        };
        let text = serde_json::to_string_pretty(&figures)?;
        std::fs::write(path, text).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}

/// Best-of-`repeat` times of appending `all[ids.len()..]` to the report `prev` of `ids` (forward
/// pass of the new tokens on the key/value cache of `ids` when the bundle has one, else of the
/// whole new prompt; lens of the positions [`lens_model::run::engine::reusable_positions`] does not
/// keep, joined to the kept ones) and of the full recompute; checks that both give the same report.
fn time_append(
    engine: &mut lens_model::LensEngine,
    ids: &[u32],
    all: &[u32],
    prev: &lens_model::LensReport,
    opts: &LensOptions,
    repeat: usize,
) -> Result<(f64, f64)> {
    let keep = lens_model::run::engine::reusable_positions(ids, all);
    let (prev_trace, _) = engine.trace_edit(None, ids, &Progress::default())?;
    let (append_s, appended) = best_of(repeat, || {
        let (trace, _) = engine.trace_edit(Some((ids, &prev_trace)), all, &Progress::default())?;
        let mut r = prev.clone();
        r.keep_positions(keep);
        r.append_positions(engine.lens_range(all, &trace, opts, keep..all.len(), &Progress::default())?)?;
        Ok(r)
    })?;
    let (full_s, full) = best_of(repeat, || {
        let trace = engine.trace(all)?;
        Ok(engine.lens(all, &trace, opts, &Progress::default())?)
    })?;
    if appended.metrics.top1_id != full.metrics.top1_id || appended.tokens != full.tokens {
        bail!("the appended report differs from the full recompute (top-1 ids or tokens)");
    }
    // The kept positions come from the shorter forward pass: equal up to float noise.
    let worst = appended.metrics.kl_to_final.iter().flatten().zip(full.metrics.kl_to_final.iter().flatten()).map(|(a, b)| (a - b).abs()).fold(0.0f64, f64::max);
    if worst.is_nan() || worst > 1e-3 {
        bail!("the appended report's KL differs from the full recompute by {worst:.2e}");
    }
    Ok((append_s, full_s))
}
