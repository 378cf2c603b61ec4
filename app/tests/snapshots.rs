//! egui_kittest snapshot tests of every panel of the desktop app, on a report the engine computes
//! from the bundled demo model (the copy prompt, " plasma" pinned).
//!
//! kittest needs a renderer to turn egui's output into pixels. Its own is wgpu (a GPU or a
//! software Vulkan); this file has a small, deterministic CPU rasteriser instead (`SoftRenderer`:
//! egui's tessellated triangles, premultiplied-alpha blending in gamma space as egui's own
//! backends do, bilinear texture sampling, scissor rectangles), checked against hand-computed
//! pixels first. Images are compared with `tests/snapshots/*.png`; regenerate them with
//! `UPDATE_SNAPSHOTS=1` after a deliberate change (and look at them).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::collections::HashMap;

use egui::epaint::{ClippedPrimitive, Primitive, Vertex};
use egui::{Color32, TextureId, TexturesDelta};
use egui_kittest::{Harness, SnapshotOptions, TestRenderer};
use lens_app::gui::LogitLensApp;
use lens_app::gui::state::{AppState, Cell, Metric, PanelLayout, PosWindow, RankTarget};
use lens_app::session::worker::{ModelSummary, RunResult};
use lens_model::error::Progress;
use lens_model::run::runtime::{Device, init_runtime};
use lens_model::{LensEngine, LensOptions};

struct Texture {
    size: [usize; 2],
    pixels: Vec<Color32>,
    linear: bool,
}

/// A CPU rasteriser for egui's output (see the file's doc).
#[derive(Default)]
struct SoftRenderer {
    textures: HashMap<TextureId, Texture>,
}

impl SoftRenderer {
    fn sample(&self, id: TextureId, uv: egui::Pos2) -> [f32; 4] {
        let Some(t) = self.textures.get(&id) else { return [1.0; 4] };
        let (w, h) = (t.size[0], t.size[1]);
        let texel = |x: isize, y: isize| -> [f32; 4] {
            let x = x.clamp(0, w as isize - 1) as usize;
            let y = y.clamp(0, h as isize - 1) as usize;
            let c = t.pixels[y * w + x];
            [f32::from(c.r()) / 255.0, f32::from(c.g()) / 255.0, f32::from(c.b()) / 255.0, f32::from(c.a()) / 255.0]
        };
        let (fx, fy) = (uv.x * w as f32 - 0.5, uv.y * h as f32 - 0.5);
        if !t.linear {
            return texel(fx.round() as isize, fy.round() as isize);
        }
        let (x0, y0) = (fx.floor(), fy.floor());
        let (tx, ty) = (fx - x0, fy - y0);
        let (x0, y0) = (x0 as isize, y0 as isize);
        let (a, b, c, d) = (texel(x0, y0), texel(x0 + 1, y0), texel(x0, y0 + 1), texel(x0 + 1, y0 + 1));
        let mut out = [0.0; 4];
        for i in 0..4 {
            out[i] = (a[i] * (1.0 - tx) + b[i] * tx) * (1.0 - ty) + (c[i] * (1.0 - tx) + d[i] * tx) * ty;
        }
        out
    }

    fn triangle(&self, img: &mut [[f32; 4]], (w, h): (usize, usize), clip: [usize; 4], tex: TextureId, v: [&Vertex; 3], ppp: f32) {
        // One orientation for every triangle, so that an edge shared by two triangles is walked
        // in opposite directions and the tie rule below gives its pixels to exactly one of them.
        let mut v = v;
        let cross = |v: &[&Vertex; 3]| (v[1].pos.x - v[0].pos.x) * (v[2].pos.y - v[0].pos.y) - (v[2].pos.x - v[0].pos.x) * (v[1].pos.y - v[0].pos.y);
        if cross(&v) < 0.0 {
            v.swap(1, 2);
        }
        let p: Vec<(f32, f32)> = v.iter().map(|v| (v.pos.x * ppp, v.pos.y * ppp)).collect();
        let area = (p[1].0 - p[0].0) * (p[2].1 - p[0].1) - (p[2].0 - p[0].0) * (p[1].1 - p[0].1);
        if area.abs() < 1e-12 {
            return;
        }
        // A pixel centre exactly on an edge belongs to the triangle that walks the edge "downwards"
        // (or rightwards when horizontal): a top-left style fill rule, no double painting.
        let owns = |a: (f32, f32), b: (f32, f32)| b.1 > a.1 || (b.1 == a.1 && b.0 > a.0);
        let inside = |w: f32, a: (f32, f32), b: (f32, f32)| w > 0.0 || (w == 0.0 && owns(a, b));
        let min_x = p.iter().map(|q| q.0).fold(f32::INFINITY, f32::min).floor().max(clip[0] as f32) as usize;
        let max_x = (p.iter().map(|q| q.0).fold(f32::NEG_INFINITY, f32::max).ceil() as usize).min(clip[2]).min(w);
        let min_y = p.iter().map(|q| q.1).fold(f32::INFINITY, f32::min).floor().max(clip[1] as f32) as usize;
        let max_y = (p.iter().map(|q| q.1).fold(f32::NEG_INFINITY, f32::max).ceil() as usize).min(clip[3]).min(h);
        let col = |c: Color32| [f32::from(c.r()) / 255.0, f32::from(c.g()) / 255.0, f32::from(c.b()) / 255.0, f32::from(c.a()) / 255.0];
        let cs = [col(v[0].color), col(v[1].color), col(v[2].color)];
        for y in min_y..max_y {
            for x in min_x..max_x {
                let (px, py) = (x as f32 + 0.5, y as f32 + 0.5);
                let e = |a: (f32, f32), b: (f32, f32)| (b.0 - a.0) * (py - a.1) - (b.1 - a.1) * (px - a.0);
                let (w0, w1, w2) = (e(p[1], p[2]) / area, e(p[2], p[0]) / area, e(p[0], p[1]) / area);
                if !(inside(w0, p[1], p[2]) && inside(w1, p[2], p[0]) && inside(w2, p[0], p[1])) {
                    continue;
                }
                let uv = egui::pos2(w0 * v[0].uv.x + w1 * v[1].uv.x + w2 * v[2].uv.x, w0 * v[0].uv.y + w1 * v[1].uv.y + w2 * v[2].uv.y);
                let t = self.sample(tex, uv);
                let dst = &mut img[y * w + x];
                let mut src = [0.0; 4];
                for i in 0..4 {
                    src[i] = (w0 * cs[0][i] + w1 * cs[1][i] + w2 * cs[2][i]) * t[i];
                }
                for i in 0..4 {
                    dst[i] = src[i] + dst[i] * (1.0 - src[3]);
                }
            }
        }
    }

    fn paint(&self, prims: &[ClippedPrimitive], (w, h): (usize, usize), ppp: f32) -> Vec<[f32; 4]> {
        let mut img = vec![[0.0f32; 4]; w * h];
        for cp in prims {
            let Primitive::Mesh(mesh) = &cp.primitive else { continue };
            let r = cp.clip_rect;
            let clip = [
                (r.min.x * ppp).round().max(0.0) as usize,
                (r.min.y * ppp).round().max(0.0) as usize,
                (r.max.x * ppp).round().max(0.0) as usize,
                (r.max.y * ppp).round().max(0.0) as usize,
            ];
            for tri in mesh.indices.chunks_exact(3) {
                let v = [&mesh.vertices[tri[0] as usize], &mesh.vertices[tri[1] as usize], &mesh.vertices[tri[2] as usize]];
                self.triangle(&mut img, (w, h), clip, mesh.texture_id, v, ppp);
            }
        }
        img
    }
}

impl TestRenderer for SoftRenderer {
    fn handle_delta(&mut self, delta: &mut TexturesDelta) {
        for (id, d) in delta.set.iter().flat_map(|(id, ds)| ds.iter().map(move |d| (id, d))) {
            let egui::ImageData::Color(img) = &d.image;
            let linear = d.options.magnification == egui::TextureFilter::Linear;
            match d.pos {
                None => {
                    self.textures.insert(*id, Texture { size: img.size, pixels: img.pixels.clone(), linear });
                }
                Some([x0, y0]) => {
                    if let Some(t) = self.textures.get_mut(id) {
                        for y in 0..img.size[1] {
                            for x in 0..img.size[0] {
                                t.pixels[(y0 + y) * t.size[0] + x0 + x] = img.pixels[y * img.size[0] + x];
                            }
                        }
                    }
                }
            }
        }
        for id in &delta.free {
            self.textures.remove(id);
        }
    }

    fn render(&mut self, ctx: &egui::Context, output: &egui::FullOutput) -> Result<image::RgbaImage, String> {
        let ppp = output.pixels_per_point;
        let screen = ctx.content_rect();
        let (w, h) = ((screen.width() * ppp).round() as usize, (screen.height() * ppp).round() as usize);
        let prims = ctx.tessellate(output.shapes.clone(), ppp);
        let img = self.paint(&prims, (w, h), ppp);
        let bytes: Vec<u8> = img.iter().flat_map(|p| p.map(|c| (c.clamp(0.0, 1.0) * 255.0).round() as u8)).collect();
        image::RgbaImage::from_raw(w as u32, h as u32, bytes).ok_or_else(|| "bad image size".to_string())
    }
}

#[test]
fn the_soft_renderer_paints_what_egui_asks_for() {
    // A dark background, one opaque red square and one half-transparent white square over it:
    // the pixels are known without any renderer.
    let mut h = Harness::builder().with_size(egui::vec2(60.0, 40.0)).renderer(SoftRenderer::default()).build_ui(|ui| {
        let p = ui.ctx().layer_painter(egui::LayerId::background());
        p.rect_filled(ui.ctx().content_rect(), 0.0, Color32::from_rgb(10, 20, 30));
        p.rect_filled(egui::Rect::from_min_size(egui::pos2(5.0, 5.0), egui::vec2(10.0, 10.0)), 0.0, Color32::from_rgb(200, 0, 0));
        p.rect_filled(egui::Rect::from_min_size(egui::pos2(30.0, 5.0), egui::vec2(10.0, 10.0)), 0.0, Color32::from_rgba_premultiplied(100, 100, 100, 128));
        p.text(egui::pos2(5.0, 20.0), egui::Align2::LEFT_TOP, "Hi", egui::FontId::proportional(14.0), Color32::WHITE);
    });
    h.run();
    let img = h.render().unwrap();
    assert_eq!(img.dimensions(), (60, 40));
    assert_eq!(img.get_pixel(1, 1).0, [10, 20, 30, 255], "background");
    assert_eq!(img.get_pixel(10, 10).0, [200, 0, 0, 255], "opaque square");
    // premultiplied grey 100 at alpha 128 over the background: 100 + c * (1 - 128/255)
    let over = |c: u8| (100.0 + f32::from(c) * (1.0 - 128.0 / 255.0)).round() as u8;
    assert_eq!(img.get_pixel(35, 10).0, [over(10), over(20), over(30), 255], "translucent square");
    // The text is drawn: some pixels in its box are much lighter than the background.
    let lit = (5..25).flat_map(|x| (20..36).map(move |y| (x, y))).filter(|&(x, y)| img.get_pixel(x, y).0[0] > 120).count();
    assert!(lit > 10, "only {lit} lit pixels where 'Hi' is drawn");
}

/// The demo model's report on the copy prompt, " plasma" pinned, as the worker would deliver it.
fn demo_result() -> (ModelSummary, RunResult, String) {
    init_runtime(None).unwrap();
    let dir = lens_model::run::resolve::resolve_model(None, &Progress::default()).unwrap();
    let mut engine = LensEngine::open(&dir, Device::Cpu, &Progress::default()).unwrap();
    let prompt = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../assets/prompts/plasma.txt")).unwrap();
    let ids = engine.tokenize(&prompt, false).unwrap();
    let plasma = engine.tokenizer.token_id(" plasma").unwrap();
    let opts = LensOptions { subblocks: true, k: 10, pinned: vec![plasma], ..LensOptions::default() };
    let mut report = engine.run_ids(&ids, &opts, &Progress::default()).unwrap();
    report.run.forward_ms = 0.0; // timings are shown in the status bar: keep the pictures stable
    report.run.lens_ms = 0.0;
    let trace = engine.trace(&ids).unwrap();
    let dla: Vec<Vec<f64>> = (0..ids.len()).map(|p| lens_model::lens::attribution::terms(&trace, &engine.decoder, p, plasma).unwrap()).collect();
    let dla = lens_model::grid::Grid::from_rows(dla).unwrap().transposed();
    (
        ModelSummary::of_engine(&engine, &dir),
        RunResult { prompt: prompt.clone(), total_positions: report.n_pos(), report, pinned_dla: Some(dla), compare: None },
        prompt,
    )
}

/// The app with `result` on screen (the demo model's folder in the status bar), rendered in
/// software at `size` and stepped until it settles.
fn rendered(state: AppState, model: ModelSummary, result: RunResult, size: egui::Vec2) -> Harness<'static, LogitLensApp> {
    let mut app = LogitLensApp::with_result(state, model, result);
    if let Some(m) = app.state.model.as_mut() {
        std::sync::Arc::make_mut(m).dir = std::path::PathBuf::from("assets/demo-model");
    }
    let mut h = Harness::builder()
        .with_size(size)
        .with_context_setup(lens_app::gui::fonts::install_bundled)
        .allow_missing_glyphs()
        .renderer(SoftRenderer::default())
        .build_ui_state(|ui, app: &mut LogitLensApp| app.show(ui), app);
    for _ in 0..4 {
        h.step();
    }
    h
}

fn snapshot_of(metric: Metric, name: &str) {
    let (model, result, prompt) = demo_result();
    let mut state = AppState { prompt, ..AppState::default() };
    state.view.layout = PanelLayout::Tabs;
    state.view.tab = metric;
    state.view.subblocks = true;
    state.view.show_inspector = true;
    state.view.show_contributions = true;
    state.pinned = result.report.pinned.as_ref().map(|p| p.tokens[0].id);
    // The copy case: the last 12 positions, the cell at the second " say" (whose next token is
    // " plasma") selected in the final row, ranks of the pinned " plasma".
    state.view.positions = PosWindow::LastN(12);
    state.view.rank_target = RankTarget::Pinned;
    state.selection = Some(Cell { site: result.report.sites.len() - 1, pos: result.report.n_pos() - 2 });
    let mut h = rendered(state, model, result, egui::vec2(1280.0, 800.0));
    assert!(h.state().geometry.iter().any(|g| g.metric == metric), "{metric:?} is painted");
    // Up to 0.5 % of the pixels may differ: ONNX Runtime's kernels differ between CPUs (AVX2 or
    // AVX-512) in the last bits, which can change a rounded number in a cell; a missing or broken
    // panel changes far more.
    let options = SnapshotOptions::new().output_path(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/snapshots")).max_failed_pixels(1280 * 800 / 200);
    h.snapshot_options(name, &options);
}

#[test]
fn snapshot_logits_panel() {
    snapshot_of(Metric::Logits, "panel_logits");
}

#[test]
fn snapshot_ranks_panel() {
    snapshot_of(Metric::Ranks, "panel_ranks");
}

#[test]
fn snapshot_kl_panel() {
    snapshot_of(Metric::Kl, "panel_kl");
}

#[test]
fn snapshot_entropy_panel() {
    snapshot_of(Metric::Entropy, "panel_entropy");
}

/// File → Open Hugging Face model…: the id box and the models opened before, ids and folders,
/// each with its family and BOS state.
#[test]
fn snapshot_open_hugging_face_model_window() {
    use egui_kittest::kittest::Queryable as _;
    use lens_app::gui::state::RecentModel;
    let (model, result, prompt) = demo_result();
    let mut state = AppState { prompt, ..AppState::default() };
    state.show_open_id = true;
    state.open_id_text = "Qwen/Qwen2.5-0.5B".into();
    state.recent_models = vec![
        RecentModel { source: "meta-llama/Llama-3.2-1B".into(), family: Some("llama".into()), adds_bos: true, hide_bos: true },
        RecentModel { source: "Qwen/Qwen2.5-0.5B".into(), family: Some("qwen2".into()), adds_bos: false, hide_bos: false },
        RecentModel { source: "assets/demo-model".into(), family: Some("gpt2".into()), adds_bos: false, hide_bos: false },
    ];
    let mut h = rendered(state, model, result, egui::vec2(1280.0, 800.0));
    assert!(h.query_by_label_contains("meta-llama/Llama-3.2-1B  ·  llama  ·  BOS hidden").is_some());
    assert!(h.query_by_label_contains("Qwen/Qwen2.5-0.5B  ·  qwen2").is_some());
    let options = SnapshotOptions::new().output_path(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/snapshots")).max_failed_pixels(1280 * 800 / 200);
    h.snapshot_options("window_open_hf_model", &options);
}

/// Side by side and Stacked at 1280×800 and 1920×1080 (issue 11, item 11: at 1500×940 the panel
/// headers drew over each other, the Ranks grid ran under the KL panel's labels and each panel
/// showed ~4 of 14 positions): the four panels do not overlap, each shows its header, its colour
/// bar and at least ten positions, and nothing of a panel is painted outside it.
#[test]
fn side_by_side_and_stacked_layouts_fit_at_two_sizes() {
    let (model, result, prompt) = demo_result();
    let n_pos = result.report.n_pos();
    assert!(n_pos >= 14, "the copy-case prompt has {n_pos} positions");
    let mut results = egui_kittest::SnapshotResults::new();
    for (layout, name) in [(PanelLayout::SideBySide, "side_by_side"), (PanelLayout::Stacked, "stacked")] {
        for (w, h) in [(1280.0, 800.0), (1920.0, 1080.0)] {
            let mut state = AppState { prompt: prompt.clone(), ..AppState::default() };
            state.view.layout = layout;
            let mut harness = rendered(state, model.clone(), result.clone(), egui::vec2(w, h));
            let what = format!("{name} at {w}x{h}");
            let g = harness.state().geometry.clone();
            assert_eq!(g.len(), 4, "{what}: four panels");
            for (i, a) in g.iter().enumerate() {
                let inside = |r: egui::Rect| a.panel.expand(0.5).contains_rect(r);
                assert!(inside(a.header) && inside(a.color_bar) && inside(a.cells), "{what}: {:?} paints outside its panel: {a:?}", a.metric);
                assert!(a.color_bar.width() >= 100.0 && a.color_bar.height() > 0.0, "{what}: {:?} colour bar {:?}", a.metric, a.color_bar);
                assert!(a.header.bottom() <= a.cells.top() + 0.5, "{what}: {:?} header over the cells", a.metric);
                let shown = (a.cells.width() / a.cell.x).floor() as usize;
                assert!(shown >= 10, "{what}: {:?} shows {shown} positions ({:?}, cell {:?})", a.metric, a.cells, a.cell);
                for b in g.iter().skip(i + 1) {
                    let overlap = a.panel.intersect(b.panel);
                    assert!(!overlap.is_positive() || overlap.area() < 1.0, "{what}: {:?} and {:?} overlap", a.metric, b.metric);
                }
            }
            let options = SnapshotOptions::new().output_path(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/snapshots")).max_failed_pixels((w * h) as usize / 200);
            harness.snapshot_options(format!("layout_{name}_{w}x{h}"), &options);
            results.extend_harness(&mut harness);
        }
    }
    results.unwrap();
}

/// The Corpus window with two runs of the demo model (logit lens and last MLP over the first
/// 1024 held-out tokens): two mean lines with bands and their legend.
#[test]
fn snapshot_corpus_window() {
    use lens_app::session::worker::CorpusRun;
    use lens_model::analyses::corpus::{CorpusOptions, run_corpus};
    let (model, result, prompt) = demo_result();
    let dir = lens_model::run::resolve::resolve_model(None, &Progress::default()).unwrap();
    let mut engine = LensEngine::open(&dir, Device::Cpu, &Progress::default()).unwrap();
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../assets/demo-model/heldout.txt")).unwrap();
    let mut state = AppState { prompt, ..AppState::default() };
    for decoder in [lens_model::lens::kernel::DecoderKind::LogitLens, lens_model::lens::kernel::DecoderKind::LastMlp] {
        let opts = CorpusOptions {
            window: Some(128),
            max_tokens: Some(1024),
            lens: LensOptions { k: 1, decoder, ..LensOptions::default() },
            ..CorpusOptions::default()
        };
        let mut report = run_corpus(&mut engine, &text, &opts, &Progress::default()).unwrap();
        report.run.seconds = 0.0;
        state.corpus_runs.push(std::sync::Arc::new(CorpusRun { label: format!("heldout.txt · {}", decoder.name()), report }));
    }
    state.show_corpus = true;
    let mut h = rendered(state, model, result, egui::vec2(1280.0, 800.0));
    let options = SnapshotOptions::new().output_path(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/snapshots")).max_failed_pixels(1280 * 800 / 200);
    h.snapshot_options("window_corpus", &options);
}

/// `prompt` on the demo model (logit lens) compared with `with`; the tuned lens shipped with
/// the demo model is open. Each panel shows A, B and A − B, the inspector both trajectories.
fn compare_result(with: lens_app::session::worker::CompareWith, prompt: &str) -> (ModelSummary, RunResult, AppState) {
    use lens_app::session::worker::CompareWith;
    use lens_model::lens::kernel::DecoderKind;
    init_runtime(None).unwrap();
    let dir = lens_model::run::resolve::resolve_model(None, &Progress::default()).unwrap();
    let mut engine = LensEngine::open(&dir, Device::Cpu, &Progress::default()).unwrap();
    let lens_dir = std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../assets/demo-model/tuned-lens"));
    engine.set_tuned_lens(Some(lens_model::lens::tuned_lens::TunedLens::open(&lens_dir).unwrap())).unwrap();
    let opts = LensOptions { subblocks: false, k: 10, ..LensOptions::default() };
    let ids = engine.tokenize(prompt, false).unwrap();
    let mut a = engine.run_ids(&ids, &opts, &Progress::default()).unwrap();
    let mut b = match &with {
        CompareWith::Decoder(d) => engine.run_ids(&ids, &LensOptions { decoder: *d, ..opts.clone() }, &Progress::default()).unwrap(),
        CompareWith::Prompt(p) => engine.run_ids(&engine.tokenize(p, false).unwrap(), &opts, &Progress::default()).unwrap(),
        CompareWith::Model(_) | CompareWith::Patched(_) => unreachable!("not used here"),
    };
    for r in [&mut a, &mut b] {
        r.run.forward_ms = 0.0;
        r.run.lens_ms = 0.0;
        r.run.tuned_lens = r.run.tuned_lens.as_ref().map(|_| "assets/demo-model/tuned-lens".into());
    }
    let cmp = lens_model::analyses::compare::compare(a.clone(), b, with.varied()).unwrap();
    let mut state = AppState { prompt: prompt.into(), ..AppState::default() };
    if let CompareWith::Prompt(p) = &with {
        state.compare_text.clone_from(p);
    }
    state.compare = Some(with);
    state.tuned_lens = Some(lens_dir);
    state.view.decoder = DecoderKind::LogitLens;
    state.view.show_inspector = true;
    state.view.show_contributions = false;
    state.selection = Some(Cell { site: a.sites.len() - 2, pos: a.n_pos() - 2 });
    let result = RunResult { prompt: prompt.into(), total_positions: a.n_pos(), report: a, pinned_dla: None, compare: Some(std::sync::Arc::new(cmp)) };
    (ModelSummary::of_engine(&engine, &dir), result, state)
}

#[test]
fn snapshot_compare_logit_lens_and_tuned_lens() {
    let prompt = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../assets/prompts/plasma.txt")).unwrap();
    let (model, result, mut state) = compare_result(lens_app::session::worker::CompareWith::Decoder(lens_model::lens::kernel::DecoderKind::TunedLens), &prompt);
    state.view.layout = PanelLayout::Tabs;
    state.view.tab = Metric::Kl;
    state.view.positions = PosWindow::LastN(8);
    let mut h = rendered(state, model, result, egui::vec2(1500.0, 900.0));
    // Three KL grids: A, B and A − B, with the same cells.
    let grids: Vec<_> = h.state().geometry.iter().filter(|g| g.metric == Metric::Kl).copied().collect();
    assert_eq!(grids.len(), 3);
    assert!(
        grids.iter().all(|g| (g.cells.size() - grids[0].cells.size()).length() < 0.5),
        "{:?}",
        grids.iter().map(|g| (g.header, g.cells)).collect::<Vec<_>>()
    );
    let vm = h.state().view_model.as_ref().unwrap();
    let cmp = vm.compare.as_ref().unwrap();
    // A − B is the difference of what A and B paint, cell by cell.
    let (pa, pb, pd) = (vm.panel(Metric::Kl).unwrap(), cmp.b.panel(Metric::Kl).unwrap(), cmp.diff.panel(Metric::Kl).unwrap());
    for i in 0..pa.values.len() {
        assert!((pd.values[i] - (pa.values[i] - pb.values[i])).abs() < 1e-12);
    }
    // The tuned lens is closer to the final distribution below the last layer: A − B > 0 there.
    assert!(pd.values.iter().filter(|v| **v > 0.0).count() > pd.values.len() / 2, "{:?}", pd.values);
    let options = SnapshotOptions::new().output_path(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/snapshots")).max_failed_pixels(1500 * 900 / 200);
    h.snapshot_options("compare_decoders", &options);
}

#[test]
fn snapshot_compare_two_prompts_stacked() {
    // A clean and a corrupted prompt of the same length ("Paris" → "Rome"): the shown panels
    // stacked as rows of A | B | A − B, at a smaller window.
    let clean = "The Eiffel Tower is in Paris. The Eiffel Tower is in";
    let corrupt = "The Eiffel Tower is in Rome. The Eiffel Tower is in";
    let (model, result, mut state) = compare_result(lens_app::session::worker::CompareWith::Prompt(corrupt.into()), clean);
    let cmp = result.compare.clone().unwrap();
    assert_eq!(cmp.aligned_by, "position");
    state.view.layout = PanelLayout::Stacked;
    state.view.shown = [true, false, true, false];
    let mut h = rendered(state, model, result, egui::vec2(1280.0, 800.0));
    assert_eq!(h.state().geometry.len(), 6, "two metrics × A, B, A − B");
    let vm = h.state().view_model.as_ref().unwrap();
    let labels = &vm.compare.as_ref().unwrap().diff.input_labels;
    assert!(labels.iter().any(|l| l.contains('→')), "the differing token is marked: {labels:?}");
    let options = SnapshotOptions::new().output_path(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/snapshots")).max_failed_pixels(1280 * 800 / 200);
    h.snapshot_options("compare_prompts", &options);
}

#[test]
fn snapshot_fit_tuned_lens_window() {
    // The Fit window with the loss curves of a fit in progress (the demo model's own fit log).
    let (model, result, prompt) = demo_result();
    let mut state = AppState { prompt, ..AppState::default() };
    let log = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../assets/demo-model/tuned-lens/fit_log.txt")).unwrap();
    for line in log.lines().filter(|l| l.starts_with("step ")) {
        // "step 3/60  KL embed 21.620 0 4.396 … · mean …"
        let (head, rest) = line.split_once("  KL ").unwrap();
        let (step, steps) = head.trim_start_matches("step ").split_once('/').unwrap();
        let losses: Vec<f64> = rest.split(" · ").next().unwrap().split_whitespace().skip(1).step_by(2).map(|v| v.parse().unwrap()).collect();
        state.fit_history.push(std::sync::Arc::new(lens_model::lens::tuned_lens::fit::FitStep {
            step: step.parse().unwrap(),
            steps: steps.parse().unwrap(),
            loss: losses,
            grad_norm: 1.0,
            lr: 0.1,
            tokens: 1024,
            elapsed_s: 0.0,
        }));
    }
    assert_eq!(state.fit_history.len(), 60);
    assert_eq!(state.fit_history[0].loss.len(), 8);
    state.fit = lens_app::gui::state::FitSettings {
        text: Some("shared/corpus/tinystories_v1_valid_head.txt".into()),
        // Relative to the test's folder (app/): the demo lens, so the window asks before replacing it.
        out: Some("../assets/demo-model/tuned-lens".into()),
        steps: 60,
        tokens: 1024,
        replace: false,
    };
    state.show_fit = true;
    let mut h = rendered(state, model, result, egui::vec2(1280.0, 800.0));
    let options = SnapshotOptions::new().output_path(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/snapshots")).max_failed_pixels(1280 * 800 / 200);
    h.snapshot_options("window_fit", &options);
}

/// The Fit J-lens window in the middle of a resumed fit (a checkpoint beside the lens file),
/// with the last finished fit's line.
#[test]
fn snapshot_fit_jlens_window() {
    let (model, result, prompt) = demo_result();
    let mut state = AppState { prompt, ..AppState::default() };
    state.jfit = lens_app::gui::state::JfitSettings {
        prompts: Some("shared/corpus/prompts.txt".into()),
        out: Some("/tmp/logit-lens-snapshot/demo-jlens.pt".into()),
        max_seq_len: 128,
        skip_first: 16,
        dim_batch: 8,
        layers: String::new(),
        f32: false,
        replace: false,
    };
    state.jfit_progress = Some(lens_app::session::worker::JfitProgress { done: 37, total: 200, this_run: 12, seconds: 43.2 });
    state.jfit_done = Some((
        "/tmp/logit-lens-snapshot/earlier.pt".into(),
        std::sync::Arc::new(lens_model::analyses::jlens_fit::JlensFitReport {
            n_prompts: 199,
            skipped: 1,
            prompts_run: 199,
            source_layers: (0..5).collect(),
            seconds: 716.4,
            backward_runs: 199 * 32,
        }),
    ));
    state.show_jfit = true;
    let mut h = rendered(state, model, result, egui::vec2(1280.0, 800.0));
    let options = SnapshotOptions::new().output_path(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/snapshots")).max_failed_pixels(1280 * 800 / 200);
    h.snapshot_options("window_fit_jlens", &options);
}

/// The question File → Open model asks when `--weights auto` would open a checkpoint quantized.
#[test]
fn snapshot_open_with_quantized_weights_window() {
    use egui_kittest::kittest::Queryable as _;
    let (model, result, prompt) = demo_result();
    let mut state = AppState { prompt, ..AppState::default() };
    state.ask_weights = Some(lens_app::gui::state::WeightsAsk {
        path: "/models/Meta-Llama-3-8B".into(),
        format: lens_model::build::quant::WeightFormat::Int4,
        reason: "auto: int4 weights (f32 would need about 41.8 GB, int4 about 11.3 GB; 15.2 GB available)".into(),
    });
    let mut h = rendered(state, model, result, egui::vec2(1280.0, 800.0));
    assert!(h.query_by_label("Open with int4 weights").is_some());
    assert!(h.query_by_label("Open in f32 anyway").is_some());
    let options = SnapshotOptions::new().output_path(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/snapshots")).max_failed_pixels(1280 * 800 / 200);
    h.snapshot_options("window_open_quantized", &options);
}

/// The Activation patching window over the demo model's run: the IOI-like "Eiffel Tower" /
/// "Colosseum" pair, residual sites, the normalised effects as a diverging heatmap, attribution
/// patching's estimate beside them.
#[test]
fn snapshot_patch_window() {
    use lens_model::analyses::patch::{PatchKind, PatchOptions, patch_sweep};
    let (model, result, _) = demo_result();
    let dir = lens_model::run::resolve::resolve_model(None, &Progress::default()).unwrap();
    let mut engine = LensEngine::open(&dir, Device::Cpu, &Progress::default()).unwrap();
    let (clean, corrupt) = ("The Eiffel Tower is in the city of", "The Colosseum is in the city of");
    let (ci, ki) = (engine.tokenize(clean, false).unwrap(), engine.tokenize(corrupt, false).unwrap());
    let opts =
        PatchOptions { kinds: vec![PatchKind::Resid], target: engine.tokenizer.token_id(" Paris").unwrap(), against: engine.tokenizer.token_id(" Rome") };
    let mut report = patch_sweep(&mut engine, &ci, &ki, &opts, &Progress::default()).unwrap();
    report.seconds = 0.0;
    let mut runner = lens_model::run::gradients::GradRunner::open(&engine.bundle, Device::Cpu, 0, &Progress::default()).unwrap();
    lens_model::analyses::attribution_patching::add_estimates(&mut engine, &mut runner, &ci, &ki, &mut report, &Progress::default()).unwrap();
    let mut state = AppState { prompt: clean.into(), ..AppState::default() };
    state.patch = lens_app::gui::state::PatchSettings {
        corrupt: corrupt.into(),
        target: " Paris".into(),
        against: " Rome".into(),
        kind: PatchKind::Resid,
        estimate: true,
    };
    state.patch_result = Some(std::sync::Arc::new(report));
    state.show_patch = true;
    // Exact and estimate side by side, at a roomy and at a narrow window.
    let mut results = egui_kittest::SnapshotResults::new();
    for (name, w, h_px) in [("window_patch", 1280.0, 800.0), ("window_patch_narrow", 1000.0, 700.0)] {
        let mut h = rendered(state.clone(), model.clone(), result.clone(), egui::vec2(w, h_px));
        let options =
            SnapshotOptions::new().output_path(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/snapshots")).max_failed_pixels((w * h_px / 200.0) as usize);
        h.snapshot_options(name, &options);
        results.extend_harness(&mut h);
    }
    results.unwrap();
}

/// The Steering window with its settings and two continuations.
#[test]
fn snapshot_steer_window() {
    let (model, result, prompt) = demo_result();
    let mut state = AppState { prompt, ..AppState::default() };
    state.steer = lens_app::gui::state::SteerSettings { enabled: true, layer: 5, a: " happy".into(), b: " sad".into(), file: String::new(), alpha: 6.0 };
    state.steer_generated = Some((" excited to meet in the beautiful beautiful with the beautiful".into(), " excited. She wanted to go on a trip to".into()));
    state.show_steer = true;
    let mut h = rendered(state, model, result, egui::vec2(1280.0, 800.0));
    let options = SnapshotOptions::new().output_path(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/snapshots")).max_failed_pixels(1280 * 800 / 200);
    h.snapshot_options("window_steer", &options);
}

/// The Open remote model (nnsight) window, filled in.
fn remote_window(name: &str, size: egui::Vec2) {
    let (model, result, prompt) = demo_result();
    let mut state = AppState { prompt, ..AppState::default() };
    state.remote = lens_app::gui::state::RemoteSettings { model: "meta-llama/Llama-3.1-70B".into(), ndif: true, python: "/opt/venv/bin/python".into() };
    state.show_remote = true;
    let mut h = rendered(state, model, result, size);
    let options =
        SnapshotOptions::new().output_path(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/snapshots")).max_failed_pixels((size.x * size.y / 200.0) as usize);
    h.snapshot_options(name, &options);
}

/// The Open remote model window in a large window.
#[test]
fn snapshot_remote_window() {
    remote_window("window_remote", egui::vec2(1280.0, 800.0));
}

/// The Open remote model window in a small window.
#[test]
fn snapshot_remote_window_small() {
    remote_window("window_remote_small", egui::vec2(900.0, 640.0));
}
