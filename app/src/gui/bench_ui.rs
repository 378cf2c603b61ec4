//! `logit-lens bench-ui`: CPU time per frame (UI + tessellation) of the full window over a
//! synthetic GPT-2-XL-sized result (97 rows with sub-blocks × 512 positions), with the pointer
//! sweeping over the grid and the grids scrolling, headless (no GPU, no window).

use std::time::Instant;

use anyhow::Result;

use super::LogitLensApp;
use super::state::{AppState, PanelLayout};
use crate::session::start::BenchUiArgs;
use crate::session::synthetic::synthetic_result;
use crate::session::worker::ModelSummary;

/// Runs the benchmark and prints ms/frame.
pub fn run(args: &BenchUiArgs) -> Result<()> {
    let result = synthetic_result(args.layers, args.positions, 10);
    let summary = ModelSummary::from_report(&result.report);
    let rows = result.report.sites.len();
    for (name, layout, cell_w, cell_h) in [
        ("tabs, default zoom", PanelLayout::Tabs, 64.0, 20.0),
        ("tabs, zoomed out (all cells visible)", PanelLayout::Tabs, 4.0, 6.0),
        ("4 panels side by side", PanelLayout::SideBySide, 40.0, 14.0),
    ] {
        let mut state = AppState::default();
        state.view.subblocks = true;
        state.view.layout = layout;
        state.view.cell_w = cell_w;
        state.view.cell_h = cell_h;
        // A selected cell: the inspector (top-k, three trajectory plots) and the contributions draw too.
        state.selection = Some(super::state::Cell { site: rows - 1, pos: args.positions.saturating_sub(1) });
        let mut app = LogitLensApp::with_result(state, summary.clone(), result.clone());
        let ctx = egui::Context::default();
        let screen = egui::Rect::from_min_size(egui::Pos2::ZERO, egui::vec2(args.width, args.height));
        let mut frame_ms = Vec::with_capacity(args.frames);
        let mut tess_ms = Vec::with_capacity(args.frames);
        let mut time = 0.0;
        for f in 0..args.frames + 5 {
            time += 1.0 / 60.0;
            let x = 100.0 + (f as f32 * 7.0) % (args.width * 0.5);
            let y = 260.0 + (f as f32 * 3.0) % (args.height * 0.35);
            let input =
                egui::RawInput { screen_rect: Some(screen), time: Some(time), events: vec![egui::Event::PointerMoved(egui::pos2(x, y))], ..Default::default() };
            app.state.scroll = egui::vec2((f as f32 * 11.0) % 2000.0, (f as f32 * 2.0) % 300.0);
            let t0 = Instant::now();
            let out = ctx.run_ui(input, |ui| app.show(ui));
            let t1 = Instant::now();
            let prims = ctx.tessellate(out.shapes, out.pixels_per_point);
            let t2 = Instant::now();
            std::hint::black_box(prims);
            if f >= 5 {
                frame_ms.push((t1 - t0).as_secs_f64() * 1e3);
                tess_ms.push((t2 - t1).as_secs_f64() * 1e3);
            }
        }
        let stats = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            let mean = v.iter().sum::<f64>() / v.len().max(1) as f64;
            let p95 = v.get(v.len() * 95 / 100).copied().unwrap_or(0.0);
            (mean, p95)
        };
        let (ui_mean, ui_p95) = stats(&mut frame_ms);
        let (t_mean, t_p95) = stats(&mut tess_ms);
        println!(
            "{rows} rows x {} positions, {name}: ui {ui_mean:.2} ms/frame (p95 {ui_p95:.2}), tessellate {t_mean:.2} ms (p95 {t_p95:.2}), total {:.2} ms/frame -> {:.0} frames/s CPU-bound",
            args.positions,
            ui_mean + t_mean,
            1000.0 / (ui_mean + t_mean).max(1e-6)
        );
    }
    Ok(())
}
