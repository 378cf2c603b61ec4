//! A synthetic [`RunResult`] of any size (benchmarks and tests of the painting code).

use lens_model::grid::Grid;
use lens_model::lens::attribution::{Attribution, component_names};
use lens_model::output::report::{LensReport, Metrics, ModelInfo, RunInfo, SCHEMA, TopK};
use lens_model::source::tokenizer::Token;

use crate::session::worker::RunResult;

/// A deterministic pseudo-random stream in 0..1.
fn noise(i: usize) -> f64 {
    let x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// A report shaped like a model of `n_layers` with sub-block rows over `n_pos` positions.
pub fn synthetic_result(n_layers: usize, n_pos: usize, k: usize) -> RunResult {
    let mut sites = vec!["embed".to_string()];
    for l in 0..n_layers {
        sites.push(format!("{l}.attn"));
        sites.push(l.to_string());
    }
    let n_sites = sites.len();
    let d_vocab = 50257usize;
    let grid = |f: &dyn Fn(usize, usize) -> f64| -> Grid<f64> { Grid::from_fn(n_sites, n_pos, f) };
    let depth = |s: usize| s as f64 / (n_sites.max(2) - 1) as f64;
    let top1 =
        |s: usize, p: usize| -> u32 { if noise(s * 7919 + p) < depth(s) { (p as u32 * 31 + 7) % 1000 } else { (noise(s * 31 + p * 17) * 1000.0) as u32 } };
    let rank = |s: usize, p: usize| -> u32 { (1.0 + (1.0 - depth(s)) * 5000.0 * noise(s * 13 + p * 7)) as u32 };
    let metrics = Metrics {
        top1_id: Grid::from_fn(n_sites, n_pos, &top1),
        top1_logit: Grid::from_fn(n_sites, n_pos, |s, p| (5.0 + 10.0 * depth(s) + noise(s + p * 3)) as f32),
        top1_prob: grid(&|s, p| (depth(s) * noise(s * 3 + p)).clamp(0.0, 1.0)),
        rank_of_final_top1: Grid::from_fn(n_sites, n_pos, &rank),
        final_top1_prob: grid(&|s, p| (depth(s) * noise(s * 3 + p + 1)).clamp(0.0, 1.0)),
        rank_of_next: Grid::from_fn(n_sites, n_pos, |s, p| (p + 1 < n_pos).then(|| rank(s, p + 1))),
        rank_of_input: Grid::from_fn(n_sites, n_pos, |s, p| rank(s + 1, p)),
        kl_to_final: grid(&|s, p| 20.0 * (1.0 - depth(s)) * noise(s * 5 + p)),
        kl_to_input: grid(&|s, p| 20.0 * depth(s) * noise(s * 11 + p)),
        entropy: grid(&|s, p| 10.0 * (1.0 - depth(s)) * noise(s + p * 5)),
        nll_next: Grid::from_fn(n_sites, n_pos, |s, p| (p + 1 < n_pos).then(|| 10.0 * noise(s + p))),
        prediction_depth: Vec::new(),
    };
    let top_k = TopK {
        k,
        ids: Grid::from_fn(n_sites, n_pos, |s, p| (0..k as u32).map(|i| (top1(s, p) + i * 97) % d_vocab as u32).collect()),
        logits: Grid::from_fn(n_sites, n_pos, |s, _| (0..k).map(|i| 10.0 - i as f32 * 0.5 - s as f32 * 0.0).collect()),
        probs: Grid::from_fn(n_sites, n_pos, |_, _| (0..k).map(|i| 0.5f64.powi(i as i32 + 1)).collect()),
    };
    let components = component_names(n_layers);
    let n_comp = components.len();
    let attribution = Attribution {
        final_top1_ids: (0..n_pos).map(|p| top1(n_sites - 1, p)).collect(),
        final_top1: Grid::from_fn(n_comp, n_pos, |c, p| noise(c * 3 + p * 11) * 2.0 - 0.8),
        next: Grid::from_fn(n_comp, n_pos, |c, p| (p + 1 < n_pos).then(|| noise(c * 7 + p) - 0.5)),
        components,
    };
    let tokens = (0..n_pos).map(|p| Token { id: (p as u32 * 31 + 7) % 1000, text: format!("␣tok{p}"), decoded: format!(" tok{p}"), special: false }).collect();
    let report = LensReport {
        vocab: Vec::new(),
        schema: SCHEMA.into(),
        model: ModelInfo {
            name: format!("synthetic-{n_layers}L"),
            family: "gpt2".into(),
            residual: None,
            final_softcap: None,
            n_layers,
            d_model: 1600,
            d_vocab,
            n_ctx: 1024,
            weights_sha256: None,
        },
        decoder: "logit_lens".into(),
        no_transport: Vec::new(),
        tokens,
        sites,
        metrics,
        top_k,
        attribution,
        gradient_x_activation: None,
        pinned: None,
        groups: Vec::new(),
        truncated: None,
        steering: None,
        run: RunInfo {
            engine: None,
            provider: "synthetic".into(),
            forward_ms: 0.0,
            lens_ms: 0.0,
            program: String::new(),
            forward_reused: false,
            reused_positions: 0,
            cached_positions: 0,
            lens_path: "kernel (CPU)".into(),
            tuned_lens: None,
            jacobian_lens: None,
            weights: "f32".into(),
            weights_reason: None,
        },
    };
    RunResult { prompt: String::new(), total_positions: report.n_pos(), report, pinned_dla: None, compare: None }
}
