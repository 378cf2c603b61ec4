//! The desktop app through egui_kittest (no display, no renderer): a report computed by the
//! engine from a real tiny bundle; hover / selection / scrolling shared by all panels; every
//! control changes what is shown; pinning; bad files keep the previous results.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use lens_app::gui::LogitLensApp;
use lens_app::gui::app::{DialogKind, GuiOptions};
use lens_app::gui::command::AppCommand;
use lens_app::gui::state::{AppState, Cell, KlRef, Metric, PanelLayout, PosWindow, RankTarget};
use lens_app::gui::theme::ColorMap;
use lens_app::session::worker::{ModelSummary, RunResult};
use lens_model::error::Progress;
use lens_model::run::runtime::{Device, init_runtime};
use lens_model::{LensEngine, LensOptions};
use lens_tests::fixture::{RandomGpt2, unique_temp_dir, write_checkpoint};

const PROMPT: &str = "The cat sat on the mat.";

/// One converted tiny bundle shared by the tests of this file.
fn bundle() -> &'static Path {
    static B: OnceLock<PathBuf> = OnceLock::new();
    B.get_or_init(|| {
        let hf = unique_temp_dir("gui-hf");
        write_checkpoint(&hf, &RandomGpt2::tiny(5)).unwrap();
        let b = unique_temp_dir("gui-bundle");
        lens_model::build::convert::convert_hf_checkpoint(&hf, &b, &Progress::default()).unwrap();
        b
    })
}

/// The model summary and a result computed by the engine, as the worker would deliver them.
fn engine_result(pinned: &[&str]) -> (ModelSummary, RunResult) {
    engine_result_of(PROMPT, pinned)
}

fn engine_result_of(prompt: &str, pinned: &[&str]) -> (ModelSummary, RunResult) {
    init_runtime(None).unwrap();
    let mut engine = LensEngine::open(bundle(), Device::Cpu, &Progress::default()).unwrap();
    let ids = engine.tokenize(prompt, false).unwrap();
    let pinned = pinned.iter().map(|p| engine.tokenizer.token_id(p).unwrap()).collect();
    let report = engine.run_ids(&ids, &LensOptions { subblocks: true, k: 5, pinned, ..LensOptions::default() }, &Progress::default()).unwrap();
    (ModelSummary::of_engine(&engine, bundle()), RunResult { prompt: prompt.into(), total_positions: report.n_pos(), report, pinned_dla: None, compare: None })
}

fn harness(state: AppState) -> Harness<'static, LogitLensApp> {
    harness_of(state, PROMPT)
}

/// A harness showing the result of `prompt`.
fn harness_of(state: AppState, prompt: &str) -> Harness<'static, LogitLensApp> {
    let (model, result) = engine_result_of(prompt, &[]);
    let mut state = state;
    state.prompt = prompt.into();
    let app = LogitLensApp::with_result(state, model, result);
    let mut h = Harness::builder().with_size(egui::vec2(1500.0, 940.0)).allow_missing_glyphs().build_ui_state(|ui, app: &mut LogitLensApp| app.show(ui), app);
    h.step();
    h.step();
    h
}

fn side_by_side() -> AppState {
    let mut s = AppState::default();
    s.view.layout = PanelLayout::SideBySide;
    s.view.cell_w = 120.0;
    s
}

fn geometry(h: &Harness<'_, LogitLensApp>, m: Metric) -> lens_app::gui::panels::heatmap::GridGeometry {
    *h.state().geometry.iter().find(|g| g.metric == m).unwrap_or_else(|| panic!("{m:?} not painted"))
}

/// Steps the harness (the worker runs on its own thread) until `done` or a timeout.
fn step_until(h: &mut Harness<'_, LogitLensApp>, what: &str, done: impl Fn(&LogitLensApp) -> bool) {
    let t0 = Instant::now();
    while !done(h.state()) {
        assert!(t0.elapsed() < Duration::from_secs(120), "timed out waiting for {what}; error: {:?}", h.state().state.error);
        h.step();
        std::thread::sleep(Duration::from_millis(10));
    }
    h.step();
}

#[test]
fn hover_selection_and_scroll_are_shared_by_all_panels() {
    // More positions than a side-by-side panel shows at once (ten), so that the grids scroll.
    let mut h = harness_of(side_by_side(), "The cat sat on the mat. The dog sat on the rug. A bird flew over the house and the tree, and then it sang.");
    assert_eq!(h.state().geometry.len(), 4, "four panels side by side");
    let vm = h.state().view_model.clone().unwrap();
    let (row, col) = (1, 1);
    let cell = Cell { site: vm.rows[row], pos: vm.cols[col] };

    // Hover the same cell in each panel in turn: one shared hover.
    for m in Metric::ALL {
        h.hover_at(geometry(&h, m).center(row, col));
        h.step();
        h.step();
        assert_eq!(h.state().state.hover, Some(cell), "hover in {m:?}");
    }
    // Click a cell in the Ranks panel: the selection is shared (and drives the inspector).
    let other = Cell { site: vm.rows[0], pos: vm.cols[0] };
    h.state_mut().apply(AppCommand::Select(Some(other)));
    h.step();
    assert_eq!(h.state().state.selection, Some(other));
    assert!(h.query_all_by_label_contains(&format!("· position {} ·", other.pos)).next().is_some(), "inspector follows the selection");

    // Scrolling over one panel scrolls them all.
    let g = geometry(&h, Metric::Entropy);
    h.hover_at(g.cells.center());
    h.event(egui::Event::MouseWheel {
        unit: egui::MouseWheelUnit::Point,
        delta: egui::vec2(-150.0, 0.0),
        phase: egui::TouchPhase::Move,
        modifiers: egui::Modifiers::NONE,
        source: egui::MouseWheelSource::Wheel,
    });
    for _ in 0..20 {
        h.step();
    }
    let scroll = h.state().state.scroll;
    assert!(scroll.x > 0.0, "the wheel scrolled: {scroll:?}");
    for m in Metric::ALL {
        let g = geometry(&h, m);
        assert!(((g.cells.min - g.origin) - scroll).length() < 0.5, "{m:?} scrolled with the others");
    }
}

#[test]
fn clicking_a_cell_selects_it_in_every_panel() {
    let mut h = harness(side_by_side());
    let vm = h.state().view_model.clone().unwrap();
    let g = geometry(&h, Metric::Kl);
    h.hover_at(g.center(2, 1));
    h.step();
    h.event(egui::Event::PointerButton { pos: g.center(2, 1), button: egui::PointerButton::Primary, pressed: true, modifiers: egui::Modifiers::NONE });
    h.step();
    h.event(egui::Event::PointerButton { pos: g.center(2, 1), button: egui::PointerButton::Primary, pressed: false, modifiers: egui::Modifiers::NONE });
    h.step();
    h.step();
    assert_eq!(h.state().state.selection, Some(Cell { site: vm.rows[2], pos: vm.cols[1] }));
}

#[test]
fn each_control_changes_what_is_shown() {
    let mut h = harness(AppState::default());
    let vm0 = h.state().view_model.clone().unwrap();
    assert_eq!(vm0.rows.len(), 3, "embed, 0, 1 (tiny model, 2 layers)");
    assert_eq!(vm0.rows[0], 4, "output on top by default");
    assert_eq!(vm0.cols.len(), 7);

    // Sub-block rows (checkbox).
    h.get_by_label("Sub-block rows").click();
    h.step();
    h.step();
    let vm = h.state().view_model.clone().unwrap();
    assert_eq!(vm.row_labels, ["1", "1.attn", "0", "0.attn", "embed"]);

    // Flip (checkbox).
    h.get_by_label("Input on top").click();
    h.step();
    h.step();
    assert_eq!(h.state().view_model.as_ref().unwrap().row_labels.first().map(String::as_str), Some("embed"));

    // Position window (selectable "last N").
    h.get_by_label("last N").click();
    h.step();
    h.step();
    let mut v = h.state().state.view.clone();
    assert!(matches!(v.positions, PosWindow::LastN(_)));
    v.positions = PosWindow::LastN(3);
    h.state_mut().apply(AppCommand::SetView(v.clone()));
    h.step();
    assert_eq!(h.state().view_model.as_ref().unwrap().cols, [4, 5, 6]);
    v.positions = PosWindow::Range(1, 2);
    h.state_mut().apply(AppCommand::SetView(v.clone()));
    h.step();
    assert_eq!(h.state().view_model.as_ref().unwrap().cols, [1, 2]);
    v.positions = PosWindow::All;

    // Layer step: every 2nd layer keeps layer 0 and the last one.
    v.layer_step = 2;
    v.subblocks = false;
    h.state_mut().apply(AppCommand::SetView(v.clone()));
    h.step();
    assert_eq!(h.state().view_model.as_ref().unwrap().row_labels, ["embed", "0", "1"]);

    // Colour map.
    let before = h.state().view_model.as_ref().unwrap().panels[0].colors.clone();
    v.colormap = ColorMap::Magma;
    h.state_mut().apply(AppCommand::SetView(v.clone()));
    h.step();
    assert_ne!(h.state().view_model.as_ref().unwrap().panels[0].colors, before, "colour map changes the cells");

    // Ranks: target; KL: reference and cap.
    let ranks = |h: &Harness<'_, LogitLensApp>| h.state().view_model.as_ref().unwrap().panel(Metric::Ranks).unwrap().clone();
    let r0 = ranks(&h);
    v.rank_target = RankTarget::Input;
    h.state_mut().apply(AppCommand::SetView(v.clone()));
    h.step();
    let r1 = ranks(&h);
    assert_ne!(r0.title, r1.title);
    assert_ne!(r0.values, r1.values);
    let kl = |h: &Harness<'_, LogitLensApp>| h.state().view_model.as_ref().unwrap().panel(Metric::Kl).unwrap().clone();
    let k0 = kl(&h);
    v.kl_ref = KlRef::Input;
    h.state_mut().apply(AppCommand::SetView(v.clone()));
    h.step();
    assert_ne!(kl(&h).values, k0.values);
    v.kl_cap = 0.5;
    h.state_mut().apply(AppCommand::SetView(v.clone()));
    h.step();
    assert_ne!(kl(&h).colors, k0.colors);

    // Layout: stacked shows every panel, tabs one.
    h.get_by_label("Stacked").click();
    h.step();
    h.step();
    assert_eq!(h.state().geometry.len(), 4);
    h.get_by_label("Tabs").click();
    h.step();
    h.step();
    assert_eq!(h.state().geometry.len(), 1);
    h.get_by_label("Entropy").click();
    h.step();
    h.step();
    assert_eq!(h.state().geometry[0].metric, Metric::Entropy);
}

#[test]
fn keyboard_moves_the_selection_and_ctrl_o_asks_for_a_dialog() {
    let mut h = harness(AppState::default());
    h.state_mut().apply(AppCommand::Select(None));
    h.key_press(egui::Key::ArrowLeft);
    h.step();
    let vm = h.state().view_model.clone().unwrap();
    let first = h.state().state.selection.unwrap();
    assert_eq!(first, Cell { site: vm.rows[0], pos: vm.cols[vm.cols.len() - 2] });
    h.key_press(egui::Key::ArrowDown);
    h.step();
    assert_eq!(h.state().state.selection, Some(Cell { site: vm.rows[1], pos: first.pos }));
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::O);
    h.step();
    assert_eq!(h.state().last_dialog_request, Some(DialogKind::Prompt), "the app raises the request (and opens no dialog in tests)");
    h.key_press_modifiers(egui::Modifiers::COMMAND | egui::Modifiers::SHIFT, egui::Key::O);
    h.step();
    assert_eq!(h.state().last_dialog_request, Some(DialogKind::Model));
}

#[test]
fn a_bad_prompt_file_shows_its_error_and_keeps_prompt_and_results() {
    let mut h = harness(AppState::default());
    let result_before = h.state().state.result.clone().unwrap();
    let dir = unique_temp_dir("gui-bad");
    std::fs::create_dir_all(&dir).unwrap();

    let binary = dir.join("binary.txt");
    std::fs::write(&binary, [0x66, 0x6f, 0xff, 0xfe, 0x00]).unwrap();
    h.state_mut().apply(AppCommand::OpenPromptFile(binary));
    h.step();
    let err = h.state().state.error.clone().unwrap();
    assert!(err.contains("not UTF-8"), "{err}");
    assert!(h.query_by_label_contains("not UTF-8").is_some(), "the error is on screen");
    assert_eq!(h.state().state.prompt, PROMPT);
    assert!(std::sync::Arc::ptr_eq(h.state().state.result.as_ref().unwrap(), &result_before));

    let huge = dir.join("huge.txt");
    std::fs::write(&huge, vec![b'a'; 10 * 1024 * 1024 + 1]).unwrap();
    h.state_mut().apply(AppCommand::OpenPromptFile(huge));
    h.step();
    assert!(h.state().state.error.as_deref().unwrap().contains("limited to 10 MB"));
    assert_eq!(h.state().state.prompt, PROMPT);

    h.state_mut().apply(AppCommand::OpenModel(dir.join("no-such-folder")));
    h.step();
    assert!(h.state().state.error.as_deref().unwrap().contains("not a folder"));
    assert!(h.state().view_model.is_some(), "results still shown");

    // A good file replaces the prompt and clears the error.
    let good = dir.join("good.txt");
    std::fs::write(&good, "Hello world").unwrap();
    h.state_mut().apply(AppCommand::DismissError);
    h.state_mut().apply(AppCommand::OpenPromptFile(good.clone()));
    h.step();
    assert_eq!(h.state().state.prompt, "Hello world");
    assert_eq!(h.state().state.recent_prompts.first(), Some(&good));
}

#[test]
fn the_worker_loads_runs_pins_and_survives_a_bad_model_folder() {
    let opts = GuiOptions { model: Some(bundle().to_path_buf()), device: Device::Cpu, ..GuiOptions::default() };
    let state = AppState { prompt: PROMPT.into(), ..AppState::default() };
    let app = LogitLensApp::new_for_test(state, opts);
    let mut h = Harness::builder().with_size(egui::vec2(1500.0, 940.0)).allow_missing_glyphs().build_ui_state(|ui, app: &mut LogitLensApp| app.show(ui), app);
    step_until(&mut h, "the first result", |a| a.state.result.is_some());
    assert!(h.state().state.model.is_some());
    assert_eq!(h.state().state.result.as_ref().unwrap().report.n_pos(), 7);
    assert!(h.state().state.selection.is_some(), "the last position is selected at first");

    // Pin " mat" by text: the lens re-runs with it; ranks follow it; its DLA is computed.
    h.state_mut().apply(AppCommand::Pin(" mat".into()));
    step_until(&mut h, "the pinned result", |a| a.state.result.as_ref().is_some_and(|r| r.report.pinned.is_some()));
    let res = h.state().state.result.clone().unwrap();
    assert_eq!(res.report.pinned.as_ref().unwrap().tokens[0].text, "␣mat");
    assert!(res.pinned_dla.is_some());
    let ranks = h.state().view_model.as_ref().unwrap().panel(Metric::Ranks).unwrap().title.clone();
    assert!(ranks.contains("pinned"), "{ranks}");
    assert!(h.query_by_label_contains("pinned: ·mat").is_some());

    // A token that is not in the vocabulary is an error; the pin stays.
    h.state_mut().apply(AppCommand::Pin(" notasingletokenatall".into()));
    h.step();
    assert!(h.state().state.error.as_deref().unwrap().contains("not a single token"));
    assert!(h.state().state.pinned.is_some());

    // Esc clears the pin and re-runs.
    h.state_mut().apply(AppCommand::DismissError);
    h.key_press(egui::Key::Escape);
    step_until(&mut h, "the unpinned result", |a| a.state.result.as_ref().is_some_and(|r| r.report.pinned.is_none()));
    assert_eq!(h.state().state.pinned, None);

    // A folder that is not a model: a visible error; model and results stay.
    let not_a_model = unique_temp_dir("gui-not-a-model");
    std::fs::create_dir_all(&not_a_model).unwrap();
    std::fs::write(not_a_model.join("readme.txt"), "hello").unwrap();
    let before = h.state().state.result.clone().unwrap();
    h.state_mut().apply(AppCommand::OpenModel(not_a_model));
    step_until(&mut h, "the load error", |a| a.state.error.is_some());
    assert!(h.state().state.model.is_some());
    assert!(std::sync::Arc::ptr_eq(h.state().state.result.as_ref().unwrap(), &before));
    assert_eq!(h.state().state.model_path.as_deref(), Some(bundle()));

    // A Hugging Face id that is not cached, with downloads forbidden: an error that names it and
    // says what to do; model and results stay. Neither a folder nor an id: refused at once.
    // SAFETY: no other test of this binary reads these variables.
    unsafe {
        std::env::set_var("HF_HUB_OFFLINE", "1");
        std::env::set_var("HF_HUB_CACHE", unique_temp_dir("gui-hub"));
    }
    h.state_mut().apply(AppCommand::DismissError);
    h.state_mut().apply(AppCommand::ShowWindow(lens_app::gui::command::Window::OpenHubId));
    h.step();
    h.step();
    assert!(h.query_by_label_contains("taken from the local Hugging Face cache").is_some(), "the Open Hugging Face model window shows");
    h.state_mut().apply(AppCommand::OpenModel("nobody/not-cached".into()));
    assert!(!h.state().state.show_open_id, "opening closes the window");
    step_until(&mut h, "the hub error", |a| a.state.error.as_deref().is_some_and(|e| e.contains("nobody/not-cached is not in the Hugging Face cache")));
    assert!(h.state().state.model.is_some());
    assert!(std::sync::Arc::ptr_eq(h.state().state.result.as_ref().unwrap(), &before));
    h.state_mut().apply(AppCommand::DismissError);
    h.state_mut().apply(AppCommand::OpenModel("/no/such/folder".into()));
    assert!(h.state().state.error.as_deref().unwrap().contains("not a folder or a Hugging Face id"));
    h.state_mut().apply(AppCommand::DismissError);

    // An edit re-runs after a pause.
    h.state_mut().state.prompt = "The dog sat.".into();
    h.state_mut().apply(AppCommand::PromptEdited);
    step_until(&mut h, "the debounced re-run", |a| a.state.result.as_ref().is_some_and(|r| r.prompt == "The dog sat."));
}

#[test]
fn export_figure_and_data_from_the_app() {
    let mut h = harness(side_by_side());
    // Ctrl+E opens the export window; the dialog is only requested, never opened in tests.
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::E);
    h.step();
    assert!(h.state().state.show_export);
    let dir = unique_temp_dir("gui-export");
    std::fs::create_dir_all(&dir).unwrap();
    // The current panel as SVG: the same labels the screen shows, provenance inside.
    let svg = dir.join("fig.svg");
    h.state_mut().apply(AppCommand::ExportFigure(svg.clone()));
    assert_eq!(h.state().state.error, None);
    let text = std::fs::read_to_string(&svg).unwrap();
    let vm = h.state().view_model.clone().unwrap();
    let panel = vm.panel(h.state().state.view.tab).unwrap();
    assert!(text.contains(&lens_app::figure::svg::escape(&panel.title)));
    for row in &vm.row_labels {
        assert!(text.contains(&format!(">{row}<")), "row label {row}");
    }
    let prov = lens_app::figure::output::read_provenance(&svg).unwrap();
    assert_eq!(prov.prompt, PROMPT);
    // All shown panels stacked, as PDF and PNG.
    h.state_mut().state.export.all_panels = true;
    for ext in ["pdf", "png"] {
        let f = dir.join(format!("all.{ext}"));
        h.state_mut().apply(AppCommand::ExportFigure(f.clone()));
        assert_eq!(h.state().state.error, None);
        assert!(std::fs::metadata(&f).unwrap().len() > 1000);
        assert!(lens_app::figure::output::read_provenance(&f).is_ok());
    }
    // Data: JSON round-trips to the same report; CSV has one row per cell.
    let json = dir.join("r.json");
    h.state_mut().apply(AppCommand::ExportData(json.clone()));
    let back = lens_model::LensReport::read_json(&json).unwrap();
    assert_eq!(back.metrics, h.state().state.result.as_ref().unwrap().report.metrics);
    let csv = dir.join("r.csv");
    h.state_mut().apply(AppCommand::ExportData(csv.clone()));
    let rows = std::fs::read_to_string(&csv).unwrap().lines().count();
    assert_eq!(rows, 1 + back.sites.len() * back.n_pos());
    // A bad path is an error in the banner, and the results stay.
    // The page (issue 23): the figure inline with the run's top-k for hover.
    h.state_mut().apply(AppCommand::ExportFigure(dir.join("fig.html")));
    let page = std::fs::read_to_string(dir.join("fig.html")).unwrap();
    assert!(page.contains("<svg") && page.contains("id=\"logit-lens-data\"") && page.contains("\"topk\""));
    h.state_mut().apply(AppCommand::ExportFigure(dir.join("fig.jpg")));
    assert!(h.state().state.error.as_deref().unwrap_or_default().contains(".svg, .pdf, .png or .html"));
    assert!(h.state().state.result.is_some());
}

#[test]
fn a_run_shows_partial_results_that_end_in_the_whole_report() {
    // Two positions per piece: the 7-token prompt arrives as 2, 4, 6 positions, then all 7.
    let opts = GuiOptions { model: Some(bundle().to_path_buf()), device: Device::Cpu, piece_positions: Some(2), ..GuiOptions::default() };
    let state = AppState { prompt: PROMPT.into(), ..AppState::default() };
    let app = LogitLensApp::new_for_test(state, opts);
    let mut h = Harness::builder().with_size(egui::vec2(1500.0, 940.0)).allow_missing_glyphs().build_ui_state(|ui, app: &mut LogitLensApp| app.show(ui), app);
    // The first piece is shown with the prompt's full length known.
    step_until(&mut h, "a partial result", |a| a.state.result.is_some());
    let first = h.state().state.result.clone().unwrap();
    assert_eq!(first.total_positions, 7);
    assert!(first.report.n_pos() >= 2, "{} positions", first.report.n_pos());
    if first.report.n_pos() < 7 {
        assert!(h.query_by_label_contains("lens shown for the first").is_some(), "the status bar says the result is partial");
    }
    step_until(&mut h, "the whole result", |a| a.state.result.as_ref().is_some_and(|r| r.report.n_pos() == 7) && a.state.progress.is_none());
    assert!(h.query_by_label_contains("lens shown for the first").is_none());
    assert_eq!(h.state().partials_shown, 3);
    assert!(h.state().state.selection.is_some(), "the last position is selected once the whole result is there");
    // The joined pieces are the report the engine computes in one piece.
    let (_, whole) = engine_result(&[]);
    let got = &h.state().state.result.as_ref().unwrap().report;
    assert_eq!(got.tokens, whole.report.tokens);
    assert_eq!(got.metrics.top1_id, whole.report.metrics.top1_id);
    assert_eq!(got.metrics.rank_of_next, whole.report.metrics.rank_of_next);
    for (a, b) in got.metrics.kl_to_final.iter().flatten().zip(whole.report.metrics.kl_to_final.iter().flatten()) {
        assert!((a - b).abs() < 1e-9, "{a} vs {b}");
    }
}

/// Token text in scripts egui's own fonts lack (Hebrew, Armenian, Georgian, maths, the visible
/// space / newline / tab markers): the bundled fallback font draws them. The harness panics on a
/// missing glyph, so this fails without the fallback (see the next test).
const OTHER_SCRIPTS: &str = "שלום Հայերեն ქართული ∀∂∑≈ ␣↵⇥";

#[test]
fn tokens_in_other_scripts_have_glyphs() {
    let mut h = Harness::builder().with_context_setup(lens_app::gui::fonts::install_bundled).build_ui(|ui| {
        ui.label(OTHER_SCRIPTS);
    });
    h.run();
    assert!(h.query_by_label(OTHER_SCRIPTS).is_some());
}

#[test]
#[should_panic(expected = "glyph")]
fn without_the_fallback_font_those_glyphs_are_missing() {
    let mut h = Harness::builder().build_ui(|ui| {
        ui.label(OTHER_SCRIPTS);
    });
    h.run();
}

#[test]
fn system_fallback_fonts_are_the_first_existing_file_per_script() {
    let dir = unique_temp_dir("gui-fonts");
    std::fs::create_dir_all(&dir).unwrap();
    let (a, b) = (dir.join("a.ttf"), dir.join("b.ttf"));
    std::fs::write(&a, b"font a").unwrap();
    std::fs::write(&b, b"font b").unwrap();
    let missing = dir.join("missing.ttf");
    let (a, b, missing) = (a.to_str().unwrap(), b.to_str().unwrap(), missing.to_str().unwrap());
    let paths1 = [missing, a, b];
    let paths2 = [missing];
    let found = lens_app::gui::fonts::find_system_fonts(&[("CJK", &paths1), ("Thai", &paths2)]);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].0, format!("CJK: {a}"));
    assert_eq!(found[0].1, b"font a");
}

/// A model whose tokenizer puts a BOS first shows the BOS column at first; hiding it is
/// remembered with the model in Recent models (beside its family), and comes back when the model
/// is opened again after another one. Settings of older versions (bare paths) still load.
#[test]
fn the_bos_choice_is_remembered_per_model_in_recent_models() {
    use lens_app::gui::state::RecentModel;
    let hf = unique_temp_dir("gui-bos-hf");
    write_checkpoint(&hf, &RandomGpt2::tiny(6)).unwrap();
    std::fs::write(hf.join("tokenizer_config.json"), r#"{"add_bos_token": true, "bos_token": "<|endoftext|>"}"#).unwrap();
    let bos_bundle = unique_temp_dir("gui-bos-bundle");
    lens_model::build::convert::convert_hf_checkpoint(&hf, &bos_bundle, &Progress::default()).unwrap();

    let opts = GuiOptions { model: Some(bos_bundle.clone()), device: Device::Cpu, ..GuiOptions::default() };
    let app = LogitLensApp::new_for_test(AppState { prompt: PROMPT.into(), ..AppState::default() }, opts);
    let mut h = Harness::builder().with_size(egui::vec2(1500.0, 940.0)).allow_missing_glyphs().build_ui_state(|ui, app: &mut LogitLensApp| app.show(ui), app);
    step_until(&mut h, "the first result", |a| a.state.result.is_some());
    let first = h.state().state.result.as_ref().unwrap().report.tokens[0].clone();
    assert_eq!((first.id, first.special), (50256, true), "the BOS leads the prompt");
    assert!(!h.state().state.view.hide_bos, "the BOS column shows at first");
    assert_eq!(h.state().state.recent_models[0], RecentModel { source: bos_bundle.clone(), family: Some("gpt2".into()), adds_bos: true, hide_bos: false });
    assert!(h.query_by_label_contains("Hide BOS").is_some(), "one click hides it");

    // Hide it, as the toolbar's checkbox does.
    let mut v = h.state().state.view.clone();
    v.hide_bos = true;
    h.state_mut().apply(AppCommand::SetView(v));
    assert!(h.state().state.recent_models[0].hide_bos);
    let label = h.state().state.recent_models[0].label();
    assert!(label.contains("gpt2") && label.contains("BOS hidden"), "{label}");

    // Another model (no BOS): nothing hidden there.
    h.state_mut().apply(AppCommand::OpenModel(bundle().to_path_buf()));
    step_until(&mut h, "the second model", |a| a.state.model_source.as_deref() == Some(bundle()));
    assert!(!h.state().state.view.hide_bos);
    let recent = h.state().state.recent_models.clone();
    assert_eq!((recent[0].source.as_path(), recent[0].adds_bos), (bundle(), false));
    assert_eq!((&recent[1].source, recent[1].hide_bos), (&bos_bundle, true));

    // Back to the first: hidden again.
    h.state_mut().apply(AppCommand::OpenModel(bos_bundle.clone()));
    step_until(&mut h, "the first model again", |a| a.state.model_source.as_deref() == Some(bos_bundle.as_path()));
    assert!(h.state().state.view.hide_bos);

    let old: AppState = serde_json::from_str(r#"{"recent_models": ["/a/folder", "Qwen/Qwen2.5-0.5B"]}"#).unwrap();
    assert_eq!(old.recent_models, vec![RecentModel::bare("/a/folder".into()), RecentModel::bare("Qwen/Qwen2.5-0.5B".into())]);
    assert!(old.recent_models[1].is_hub_id() && !old.recent_models[0].label().contains('·'));
    let _ = std::fs::remove_dir_all(&hf);
    let _ = std::fs::remove_dir_all(&bos_bundle);
}

/// Opening another model drops the old model's result (it would be drawn with the new vocabulary)
/// and its pin, and nothing still says "pinned token" (issue 11, items 2 and 15).
#[test]
fn switching_models_drops_the_old_result_and_the_pin() {
    let hf = unique_temp_dir("gui-switch-hf");
    write_checkpoint(&hf, &RandomGpt2::tiny(7)).unwrap();
    let other = unique_temp_dir("gui-switch-bundle");
    lens_model::build::convert::convert_hf_checkpoint(&hf, &other, &Progress::default()).unwrap();

    let opts = GuiOptions { model: Some(bundle().to_path_buf()), device: Device::Cpu, ..GuiOptions::default() };
    let app = LogitLensApp::new_for_test(AppState { prompt: PROMPT.into(), ..AppState::default() }, opts);
    let mut h = Harness::builder().with_size(egui::vec2(1500.0, 940.0)).allow_missing_glyphs().build_ui_state(|ui, app: &mut LogitLensApp| app.show(ui), app);
    step_until(&mut h, "the first result", |a| a.state.result.is_some());
    assert!(!h.state().state.result.as_ref().unwrap().report.run.forward_reused);
    // Top-k is a run setting: changing it re-runs the lens at once, on the same forward pass, and
    // the status bar says so instead of "forward 0 ms" (issue 11, items 3 and 18).
    let mut v = h.state().state.view.clone();
    v.top_k = 3;
    h.state_mut().apply(AppCommand::SetView(v));
    step_until(&mut h, "the top-3 result", |a| a.state.result.as_ref().is_some_and(|r| r.report.top_k.k == 3));
    assert!(h.state().state.result.as_ref().unwrap().report.run.forward_reused);
    assert!(h.query_by_label_contains("forward reused").is_some());
    h.state_mut().apply(AppCommand::Pin(" mat".into()));
    step_until(&mut h, "the pinned result", |a| a.state.result.as_ref().is_some_and(|r| r.report.pinned.is_some()));
    let mut v = h.state().state.view.clone();
    v.contrib_target = lens_app::gui::state::ContribTarget::Pinned;
    h.state_mut().apply(AppCommand::SetView(v));
    assert_eq!(h.state().state.view.rank_target, RankTarget::Pinned);
    let old = h.state().state.result.clone().unwrap();

    h.state_mut().apply(AppCommand::OpenModel(other.clone()));
    step_until(&mut h, "the other model", |a| a.state.model_source.as_deref() == Some(other.as_path()));
    let s = &h.state().state;
    assert!(s.result.as_ref().is_none_or(|r| !std::sync::Arc::ptr_eq(r, &old)), "the old model's result is gone");
    assert_eq!((s.pinned, s.pin_text.as_str()), (None, ""));
    assert_eq!(s.view.rank_target, RankTarget::FinalTop1);
    assert_eq!(s.view.contrib_target, lens_app::gui::state::ContribTarget::FinalTop1);
    step_until(&mut h, "the other model's result", |a| a.state.result.is_some());
    let ranks = h.state().view_model.as_ref().unwrap().panel(Metric::Ranks).unwrap().title.clone();
    assert!(!ranks.contains("pinned"), "{ranks}");
    let _ = std::fs::remove_dir_all(&hf);
    let _ = std::fs::remove_dir_all(&other);
}

/// A prompt longer than the model's context: the error names the app's own control (it told the
/// user to pass a CLI flag); ticking "Keep the last tokens" runs the lens on the last `n_ctx`
/// tokens and says how many were dropped (issue 11, item 13).
#[test]
fn an_over_long_prompt_can_be_truncated_in_the_app() {
    let long = ["word"; 100].join(" ");
    let opts = GuiOptions { model: Some(bundle().to_path_buf()), device: Device::Cpu, ..GuiOptions::default() };
    let app = LogitLensApp::new_for_test(AppState { prompt: long, ..AppState::default() }, opts);
    let mut h = Harness::builder().with_size(egui::vec2(1500.0, 940.0)).allow_missing_glyphs().build_ui_state(|ui, app: &mut LogitLensApp| app.show(ui), app);
    step_until(&mut h, "the context error", |a| a.state.error.is_some());
    let e = h.state().state.error.clone().unwrap();
    assert!(e.contains("context is 64") && e.contains("Keep the last tokens"), "{e}");
    assert!(h.state().state.result.is_none());
    let mut v = h.state().state.view.clone();
    v.truncate_left = true;
    h.state_mut().apply(AppCommand::SetView(v));
    step_until(&mut h, "the truncated result", |a| a.state.result.is_some());
    let r = &h.state().state.result.as_ref().unwrap().report;
    assert_eq!(r.n_pos(), 64);
    assert_eq!(r.truncated, Some(lens_model::output::report::Truncation { original_tokens: 100, dropped_tokens: 36 }));
    assert!(h.query_by_label_contains("first 36 of 100 tokens dropped").is_some());
}

/// Appending text keeps the lens of the old positions (their prefix and next token did not change)
/// and computes only the rest (the forward pass too, on the key/value cache); the result equals a
/// fresh run of the whole new prompt (issue 11, item 4).
#[test]
fn appending_text_keeps_the_old_positions() {
    let opts = GuiOptions { model: Some(bundle().to_path_buf()), device: Device::Cpu, ..GuiOptions::default() };
    let app = LogitLensApp::new_for_test(AppState { prompt: PROMPT.into(), ..AppState::default() }, opts);
    let mut h = Harness::builder().with_size(egui::vec2(1500.0, 940.0)).allow_missing_glyphs().build_ui_state(|ui, app: &mut LogitLensApp| app.show(ui), app);
    step_until(&mut h, "the first result", |a| a.state.result.is_some());
    assert_eq!(h.state().state.result.as_ref().unwrap().report.run.reused_positions, 0);
    let longer = format!("{PROMPT} The dog sat on the rug.");
    h.state_mut().state.prompt = longer.clone();
    h.state_mut().apply(AppCommand::Run);
    step_until(&mut h, "the appended result", |a| a.state.result.as_ref().is_some_and(|r| r.prompt == longer && r.total_positions == r.report.n_pos()));
    let got = h.state().state.result.as_ref().unwrap().report.clone();
    assert_eq!(got.run.reused_positions, 6, "7 old tokens: the first 6 positions are kept");
    assert!(h.query_by_label_contains("6 positions kept").is_some());
    // The forward pass ran only the new tokens, on the key/value cache of the old ones.
    assert_eq!(got.run.cached_positions, 7, "7 old tokens: their keys and values are reused");
    assert!(h.query_by_label_contains("(7 cached)").is_some());

    init_runtime(None).unwrap();
    let mut engine = LensEngine::open(bundle(), Device::Cpu, &Progress::default()).unwrap();
    let ids = engine.tokenize(&longer, false).unwrap();
    let want = engine.run_ids(&ids, &LensOptions { subblocks: true, k: 10, ..LensOptions::default() }, &Progress::default()).unwrap();
    assert_eq!(got.tokens, want.tokens);
    assert_eq!(got.metrics.top1_id, want.metrics.top1_id);
    assert_eq!(got.metrics.rank_of_next, want.metrics.rank_of_next);
    assert_eq!(got.top_k.ids, want.top_k.ids);
    for (a, b) in got.metrics.kl_to_final.iter().flatten().zip(want.metrics.kl_to_final.iter().flatten()) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }
}

/// While the lens runs, progress asks for a repaint in 100 ms, not at once: only new results
/// repaint immediately (the app's lens was ~1.8× slower than the CLI's because every one of the
/// kernel's hundreds of progress reports a second repainted the window; issue 11, item 16).
#[test]
fn progress_repaints_at_a_capped_rate() {
    use lens_app::session::worker::{JobKind, OutcomeKind, Worker};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let ctx = egui::Context::default();
    let immediate = std::sync::Arc::new(AtomicUsize::new(0));
    let i2 = immediate.clone();
    ctx.set_request_repaint_callback(move |info| {
        if info.delay.is_zero() {
            i2.fetch_add(1, Ordering::Relaxed);
        }
    });
    // One whole-prompt piece, so that exactly one result arrives.
    let c2 = ctx.clone();
    let repaint: lens_app::session::worker::Repaint = std::sync::Arc::new(move |after: Option<Duration>| match after {
        None => c2.request_repaint(),
        Some(d) => c2.request_repaint_after(d),
    });
    let mut w = Worker::spawn(repaint, Some(64)).unwrap();
    w.submit(JobKind::Load { model: Some(bundle().to_path_buf()), device: Device::Cpu, ort_lib: None, weights: Default::default() });
    let t0 = Instant::now();
    // Frames every 2 ms, as a window would paint when asked: each frame lets the next request
    // through to the callback.
    let frames_until = |w: &mut Worker, what: &str| loop {
        let _ = ctx.run_ui(egui::RawInput::default(), |_| {});
        if w.poll().into_iter().any(|o| !matches!(o.kind, OutcomeKind::Partial(_))) {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    };
    frames_until(&mut w, "the load");
    let text = ["The cat sat on the mat."; 8].join(" ");
    let t1 = Instant::now();
    immediate.store(0, Ordering::Relaxed);
    w.submit(JobKind::Run {
        text,
        pinned: Vec::new(),
        group: None,
        k: 5,
        decoder: lens_model::lens::kernel::DecoderKind::LogitLens,
        truncate_left: false,
        compare: None,
        steer: None,
    });
    frames_until(&mut w, "the run");
    let (now, run_ms) = (immediate.load(Ordering::Relaxed), t1.elapsed().as_millis());
    assert!(now <= 3, "{now} immediate repaints during a {run_ms} ms run that delivered one result");
}

/// While a job runs the status bar shows its progress without asking for frames itself (a
/// spinner did: continuous repainting with software GL made the app's lens ~1.8× slower than
/// the CLI's; issue 11, item 16). `Harness::run` panics when frames keep being requested.
#[test]
fn a_running_job_does_not_repaint_continuously() {
    use lens_app::gui::panels::status::status_ui;
    use lens_app::session::worker::JobProgress;
    let state = AppState { progress: Some(JobProgress { what: "running the lens".into(), stage: "forward".into(), fraction: 0.3 }), ..AppState::default() };
    let mut h = Harness::builder().with_size(egui::vec2(1200.0, 40.0)).build_ui(move |ui| {
        let mut cmds = Vec::new();
        status_ui(ui, &state, &mut cmds);
    });
    h.run();
    assert!(h.query_by_label_contains("running the lens: forward").is_some());
    assert!(h.query_by_label("Cancel").is_some());
}

/// Worker outcomes are applied by one pure function of (state, outcome), tested here without a
/// window (issue 11, what to build 2).
#[test]
fn outcomes_are_applied_by_a_pure_reducer() {
    use lens_app::gui::outcome::{Effect, JobBook, apply_outcome};
    use lens_app::session::worker::OutcomeKind;
    use std::sync::Arc;
    let (model, result) = engine_result(&[]);
    let result = Arc::new(result);
    let mut state = AppState { prompt: PROMPT.into(), ..AppState::default() };
    let mut book =
        JobBook { loading: Some((1, Some(bundle().to_path_buf()))), run_after_load: true, partials_shown: 0, lens_after_load: false, lens_job: false };

    // Loaded (first model): remembered in Recent models, and the run it waited for starts.
    let fx = apply_outcome(&mut state, &mut book, true, OutcomeKind::Loaded(Arc::new(model.clone())));
    assert_eq!(fx, vec![Effect::RunLens]);
    assert_eq!(state.model_path.as_deref(), Some(bundle()));
    assert_eq!(state.recent_models[0].source, bundle());
    assert_eq!((book.loading.clone(), book.run_after_load), (None, false));

    // A partial result shows at once without moving the selection; the whole one selects the
    // last position's final site.
    let mut part = (*result).clone();
    part.report.keep_positions(3);
    let fx = apply_outcome(&mut state, &mut book, false, OutcomeKind::Partial(Arc::new(part)));
    assert!(fx.is_empty() && state.selection.is_none() && book.partials_shown == 1);
    // The next pieces carry only their own positions and are appended in place; one that does
    // not continue what is shown is dropped.
    {
        use lens_app::session::worker::RunPiece;
        let mut engine = LensEngine::open(bundle(), Device::Cpu, &Progress::default()).unwrap();
        let ids = engine.tokenize(PROMPT, false).unwrap();
        let trace = engine.trace(&ids).unwrap();
        let opts = LensOptions { subblocks: true, k: 5, ..LensOptions::default() };
        let piece = |range: std::ops::Range<usize>| {
            let start = range.start;
            Arc::new(RunPiece { start, report: engine.lens_range(&ids, &trace, &opts, range, &Progress::default()).unwrap(), pinned_dla: None })
        };
        let (p35, p57) = (piece(3..5), piece(5..6));
        apply_outcome(&mut state, &mut book, false, OutcomeKind::More(Arc::clone(&p57)));
        assert_eq!((state.result.as_ref().unwrap().report.n_pos(), book.partials_shown), (3, 1), "a piece after a gap is dropped");
        let before = Arc::clone(state.result.as_ref().unwrap());
        apply_outcome(&mut state, &mut book, false, OutcomeKind::More(p35));
        apply_outcome(&mut state, &mut book, false, OutcomeKind::More(p57));
        let shown = &state.result.as_ref().unwrap().report;
        assert_eq!((shown.n_pos(), book.partials_shown), (6, 3));
        assert_eq!(before.report.n_pos(), 3, "a result shared elsewhere is copied, not changed");
        for s in 0..shown.sites.len() {
            assert_eq!(shown.metrics.top1_id.row(s).unwrap(), &result.report.metrics.top1_id.row(s).unwrap()[..6]);
        }
    }
    // It fails before the end: the error says what the grids still show.
    apply_outcome(&mut state, &mut book, false, OutcomeKind::Failed("boom".into()));
    assert_eq!(state.error.as_deref(), Some("boom (the grids show the first 6 positions only)"));
    let fx = apply_outcome(&mut state, &mut book, false, OutcomeKind::Ran(Arc::clone(&result)));
    let (n_sites, n_pos) = (result.report.sites.len(), result.report.n_pos());
    assert_eq!(fx, vec![Effect::ScrollToSelection]);
    assert_eq!(state.selection, Some(Cell { site: n_sites - 1, pos: n_pos - 1 }));
    assert!(state.error.is_none());

    // Another model while one is shown: the old result, selection and pin go, nothing says
    // "pinned"; no run was waiting for this load.
    state.pinned = Some(5);
    state.pin_text = " mat".into();
    state.view.rank_target = RankTarget::Pinned;
    book.loading = Some((2, Some("/elsewhere".into())));
    let fx = apply_outcome(&mut state, &mut book, true, OutcomeKind::Loaded(Arc::new(model)));
    assert_eq!(fx, vec![Effect::DropViewModel]);
    assert!(state.result.is_none() && state.selection.is_none() && state.pinned.is_none() && state.pin_text.is_empty());
    assert_eq!(state.view.rank_target, RankTarget::FinalTop1);
    assert_eq!(state.recent_models.iter().map(|m| m.source.clone()).collect::<Vec<_>>(), vec![PathBuf::from("/elsewhere"), bundle().to_path_buf()]);

    // A new start with the last session's pin text: the token is pinned again (it stayed as
    // text with its suggestions on screen, unpinned); a text that is no token of the model goes.
    let (model, _) = engine_result(&[]);
    let mat = model.vocab.iter().find(|e| e.text == " mat").unwrap().id;
    let mut fresh = AppState { prompt: PROMPT.into(), pin_text: " mat".into(), ..AppState::default() };
    fresh.view.rank_target = RankTarget::Pinned;
    let mut b = JobBook { loading: Some((1, None)), run_after_load: true, partials_shown: 0, lens_after_load: false, lens_job: false };
    apply_outcome(&mut fresh, &mut b, true, OutcomeKind::Loaded(Arc::new(model.clone())));
    assert_eq!((fresh.pinned, fresh.view.rank_target), (Some(mat), RankTarget::Pinned));
    let mut stale = AppState { prompt: PROMPT.into(), pin_text: " notatoken-xyz".into(), ..AppState::default() };
    apply_outcome(&mut stale, &mut JobBook::default(), true, OutcomeKind::Loaded(Arc::new(model)));
    assert_eq!((stale.pinned, stale.pin_text.as_str()), (None, ""));

    // A cancelled load forgets what it was loading.
    book.loading = Some((3, None));
    apply_outcome(&mut state, &mut book, true, OutcomeKind::Cancelled);
    assert_eq!((book.loading.clone(), state.notice.as_deref()), (None, Some("cancelled")));
}

/// Emoji in a prompt or a token (GPT-2 has byte-level tokens of many): drawn in both the
/// proportional and the monospace (prompt editor) fonts, never as a missing-glyph box (issue 11,
/// item 18). The harness panics on a missing glyph. (Noto Emoji, bundled by egui's
/// `monochrome_emoji_fonts`, has the Unicode 6 emoji; later ones need a system font, see fonts.rs.)
#[test]
fn emoji_have_glyphs_in_both_fonts() {
    const EMOJI: &str = "😀 😂 😍 🚀 🔥 👍 ❤ ✨ 🎉 🐍 🌍 💡";
    let mut h = Harness::builder().with_context_setup(lens_app::gui::fonts::install_bundled).build_ui(|ui| {
        ui.label(EMOJI);
        ui.label(egui::RichText::new(EMOJI).monospace());
    });
    h.run();
    assert_eq!(h.query_all_by_label(EMOJI).count(), 2);
}

/// The prediction-depth overlay (issue 15, item 4): per shown column, the shown row of the
/// position's depth site (output on top: the edge under it; input on top: over it), and nothing
/// unless asked for (the heatmap and the figure scene draw this same model).
#[test]
fn the_depth_overlay_marks_each_columns_depth_row() {
    use lens_app::gui::view::ViewModel;
    let (model, result) = engine_result(&[]);
    let depth = result.report.prediction_depth();
    let mut view = lens_app::gui::state::ViewSettings { subblocks: true, ..Default::default() };
    assert!(ViewModel::build(&result, &view, &model.vocab).depth.is_empty());
    view.show_depth = true;
    for flip in [false, true] {
        view.flip = flip;
        let vm = ViewModel::build(&result, &view, &model.vocab);
        assert_eq!(vm.depth.len(), vm.cols.len());
        assert_eq!(vm.depth_below, !flip);
        for (c, &p) in vm.cols.iter().enumerate() {
            let row = vm.depth[c].unwrap();
            assert_eq!(vm.rows[row], depth[p] as usize, "column {c}: every site is shown with sub-block rows");
        }
    }
    // Every other layer shown: the mark goes on the lowest shown row at or above the depth.
    view.flip = false;
    view.layer_step = 2;
    let vm = ViewModel::build(&result, &view, &model.vocab);
    for (c, &p) in vm.cols.iter().enumerate() {
        let site = vm.rows[vm.depth[c].unwrap()];
        assert!(site >= depth[p] as usize);
        assert!(vm.rows.iter().all(|&s| s < depth[p] as usize || s >= site), "column {c}");
    }
}

/// Following a token group in the app (issue 15, item 3): type a word in the Group box, Follow:
/// the run follows its single-token variants, the Logits panel can be coloured by the group's
/// summed probability (equal to the report's cell by cell), the inspector plots it; a word with no
/// single-token variant is an error that keeps the result; ✕ stops following.
#[test]
fn a_word_group_is_followed_in_the_app() {
    use lens_app::gui::state::LogitColor;
    let opts = GuiOptions { model: Some(bundle().to_path_buf()), device: Device::Cpu, ..GuiOptions::default() };
    let app = LogitLensApp::new_for_test(AppState { prompt: PROMPT.into(), ..AppState::default() }, opts);
    let mut h = Harness::builder().with_size(egui::vec2(1500.0, 940.0)).allow_missing_glyphs().build_ui_state(|ui, app: &mut LogitLensApp| app.show(ui), app);
    step_until(&mut h, "the first result", |a| a.state.result.is_some());
    h.get_by_label("Group").click();
    h.state_mut().apply(AppCommand::SetGroupText("cat".into()));
    h.run_steps(2);
    h.get_by_label("Follow").click();
    step_until(&mut h, "the group's result", |a| a.state.result.as_ref().is_some_and(|r| !r.report.groups.is_empty()) && a.state.progress.is_none());
    let res = h.state().state.result.clone().unwrap();
    let g = &res.report.groups[0];
    assert_eq!(g.name, "cat");
    assert!(g.tokens.iter().any(|t| t.decoded == " cat") && g.tokens.iter().any(|t| t.decoded == "cat"), "{:?}", g.tokens);
    assert!(h.query_by_label_contains(&format!("{} tokens", g.tokens.len())).is_some());
    // Colour by the group: the panel's values are the group's probabilities.
    h.get_by_label("group").click();
    h.run_steps(3);
    assert_eq!(h.state().state.view.logit_color, LogitColor::Group);
    let vm = lens_app::gui::view::ViewModel::build(&res, &h.state().state.view, &[]);
    let logits = vm.panel(Metric::Logits).unwrap();
    assert!(logits.title.contains("group \"cat\""), "{}", logits.title);
    let cells: Vec<(usize, usize)> = vm.rows.iter().flat_map(|&s| vm.cols.iter().map(move |&p| (s, p))).collect();
    for (i, (s, p)) in cells.into_iter().enumerate() {
        assert_eq!(logits.values[i], g.prob[s][p], "cell {i}");
    }
    // A word with no single-token variant: an error, the result stays.
    h.state_mut().apply(AppCommand::SetGroupText("zqxvbnw".into()));
    h.state_mut().apply(AppCommand::Group("zqxvbnw".into()));
    step_until(&mut h, "the error", |a| a.state.error.is_some());
    assert!(h.state().state.error.as_ref().unwrap().contains("no variant of \"zqxvbnw\""));
    assert!(h.state().state.result.is_some());
    // Stop following: the next result has no group, and the colour falls back to probability.
    h.state_mut().apply(AppCommand::Group(String::new()));
    step_until(&mut h, "the result without the group", |a| a.state.result.as_ref().is_some_and(|r| r.report.groups.is_empty()) && a.state.progress.is_none());
    assert_eq!(h.state().state.view.logit_color, LogitColor::Probability);
}

/// The Corpus window (issue 15, item 2): a corpus run over a text file from the app (the worker,
/// progress, the result overlaid in the window with its legend), a second decoder overlaid, the
/// statistic switched, Cancel stopping a run (nothing added), Clear.
#[test]
fn corpus_runs_from_the_app_are_overlaid() {
    // The corpus checks its window against the memory available (see AVAILABLE_MEMORY_ENV).
    let _env = AVAILABLE_MEMORY_ENV.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let opts = GuiOptions { model: Some(bundle().to_path_buf()), device: Device::Cpu, ..GuiOptions::default() };
    let app = LogitLensApp::new_for_test(AppState { prompt: PROMPT.into(), ..AppState::default() }, opts);
    let mut h = Harness::builder().with_size(egui::vec2(1500.0, 940.0)).allow_missing_glyphs().build_ui_state(|ui, app: &mut LogitLensApp| app.show(ui), app);
    step_until(&mut h, "the model", |a| a.state.result.is_some());
    let dir = unique_temp_dir("gui-corpus");
    std::fs::create_dir_all(&dir).unwrap();
    let text = dir.join("stories.txt");
    std::fs::write(&text, "The cat sat on the mat. The dog sat on the rug. A bird sang in the old tree. ".repeat(40)).unwrap();
    h.state_mut().apply(AppCommand::RunCorpus(text.clone()));
    step_until(&mut h, "the corpus run", |a| !a.state.corpus_runs.is_empty());
    assert!(h.state().state.show_corpus, "the window opens with the result");
    let run = h.state().state.corpus_runs[0].clone();
    assert_eq!(run.label, "stories.txt · logit_lens");
    assert_eq!(run.report.window, 64, "the model's context");
    h.run_steps(2);
    assert!(h.query_all_by_label_contains("stories.txt · logit_lens").count() >= 2, "legend (and the status notice)");
    // Another decoder: overlaid.
    let mut v = h.state().state.view.clone();
    v.decoder = lens_model::lens::kernel::DecoderKind::Raw;
    h.state_mut().apply(AppCommand::SetView(v));
    step_until(&mut h, "the raw run's lens", |a| a.state.progress.is_none());
    h.state_mut().apply(AppCommand::RunCorpus(text.clone()));
    step_until(&mut h, "the second corpus run", |a| a.state.corpus_runs.len() == 2);
    assert_eq!(h.state().state.corpus_runs[1].label, "stories.txt · raw");
    h.state_mut().apply(AppCommand::SetCorpusMetric("nll_bits_per_byte".into()));
    h.run_steps(2);
    assert_eq!(h.state().state.corpus_metric, "nll_bits_per_byte");
    // Cancel: nothing is added.
    let big = dir.join("big.txt");
    std::fs::write(&big, "Once upon a time there was a little cat who liked to sit on mats. ".repeat(3000)).unwrap();
    h.state_mut().apply(AppCommand::RunCorpus(big));
    step_until(&mut h, "the corpus progress", |a| a.state.progress.is_some());
    h.state_mut().apply(AppCommand::Cancel);
    // The progress line and the job's outcome arrive separately: wait for both.
    step_until(&mut h, "the cancel", |a| a.state.progress.is_none() && a.state.notice.as_deref().is_some_and(|n| n.contains("cancelled")));
    assert_eq!(h.state().state.corpus_runs.len(), 2);
    assert!(h.state().state.notice.as_deref().is_some_and(|n| n.contains("cancelled")), "{:?}", h.state().state.notice);
    h.state_mut().apply(AppCommand::ClearCorpus);
    assert!(h.state().state.corpus_runs.is_empty());
}

#[test]
fn a_tuned_lens_is_fitted_resumed_and_used_in_the_app() {
    let opts = GuiOptions { model: Some(bundle().to_path_buf()), device: Device::Cpu, ..GuiOptions::default() };
    let app = LogitLensApp::new_for_test(AppState { prompt: PROMPT.into(), ..AppState::default() }, opts);
    let mut h = Harness::builder().with_size(egui::vec2(1500.0, 940.0)).allow_missing_glyphs().build_ui_state(|ui, app: &mut LogitLensApp| app.show(ui), app);
    step_until(&mut h, "the model", |a| a.state.result.is_some());
    assert_eq!(h.state().state.result.as_ref().unwrap().report.decoder, "logit_lens");
    let dir = unique_temp_dir("gui-fit");
    std::fs::create_dir_all(&dir).unwrap();
    let text = dir.join("train.txt");
    std::fs::write(&text, "The cat sat on the mat. The dog sat on the rug. A bird sang in the old tree. ".repeat(60)).unwrap();
    // A folder that is not a lens: a clear error, nothing changes.
    h.state_mut().apply(AppCommand::OpenTunedLens(dir.clone()));
    step_until(&mut h, "the refusal", |a| a.state.error.is_some());
    assert!(h.state().state.error.as_deref().unwrap().contains("config.json"), "{:?}", h.state().state.error);
    assert!(h.state().state.tuned_lens.is_none());
    // Without a lens the decoder menu greys the tuned lens out.
    h.state_mut().apply(AppCommand::DismissError);
    // Fit from the window, cancel after the first step: a checkpoint is left, no lens.
    let out = dir.join("lens");
    h.state_mut().apply(AppCommand::ShowWindow(lens_app::gui::command::Window::FitLens));
    let fit = lens_app::gui::state::FitSettings { text: Some(text.clone()), out: Some(out.clone()), steps: 40, tokens: 128, replace: false };
    h.state_mut().apply(AppCommand::SetFit(fit.clone()));
    h.run_steps(2);
    assert!(h.query_by_label("Fit").is_some(), "the Fit button");
    h.state_mut().apply(AppCommand::StartFit { resume: false });
    step_until(&mut h, "the first step", |a| !a.state.fit_history.is_empty());
    h.state_mut().apply(AppCommand::Cancel);
    step_until(&mut h, "the cancel", |a| a.state.progress.is_none());
    let done = h.state().state.fit_history.len();
    assert!((1..40).contains(&done), "{done} steps");
    assert!(lens_model::lens::tuned_lens::fit::has_checkpoint(&out));
    assert!(!out.join("params.pt").exists());
    assert!(h.state().state.tuned_lens.is_none());
    // Resume with fewer steps is refused (other options); with the same ones it continues.
    h.state_mut().apply(AppCommand::SetFit(lens_app::gui::state::FitSettings { steps: 41, ..fit.clone() }));
    h.state_mut().apply(AppCommand::StartFit { resume: true });
    step_until(&mut h, "the refusal", |a| a.state.error.is_some());
    assert!(h.state().state.error.as_deref().unwrap().contains("other text, model or options"), "{:?}", h.state().state.error);
    h.state_mut().apply(AppCommand::DismissError);
    h.state_mut().apply(AppCommand::SetFit(lens_app::gui::state::FitSettings { steps: 40, ..fit }));
    h.state_mut().apply(AppCommand::StartFit { resume: true });
    step_until(&mut h, "the fitted lens", |a| a.state.tuned_lens.is_some());
    let steps: Vec<usize> = h.state().state.fit_history.iter().map(|s| s.step).collect();
    assert_eq!(steps, (1..=40).collect::<Vec<_>>(), "the plot holds every step once");
    let first: f64 = h.state().state.fit_history[0].loss.iter().sum();
    let last: f64 = h.state().state.fit_history[39].loss.iter().sum();
    assert!(last < first, "loss {first} -> {last}");
    assert!(out.join("params.pt").is_file() && out.join("config.json").is_file());
    assert_eq!(h.state().state.view.decoder, lens_model::lens::kernel::DecoderKind::TunedLens);
    // The lens re-runs under it: no sub-block rows (no translators there), the decoder recorded.
    step_until(&mut h, "the tuned run", |a| a.state.result.as_ref().is_some_and(|r| r.report.decoder == "tuned_lens") && a.state.progress.is_none());
    let report = h.state().state.result.as_ref().unwrap().report.clone();
    assert!(report.sites.iter().all(|s| !s.contains("attn")), "{:?}", report.sites);
    assert_eq!(report.run.tuned_lens.as_deref(), Some(out.to_str().unwrap()));
    h.run_steps(2);
    assert!(h.query_all_by_label_contains("tuned lens").count() >= 1);
    // The folder now holds a lens: the window asks before replacing it, and a fit started
    // without the box ticked is refused, the lens left as it was.
    let params_before = std::fs::read(out.join("params.pt")).unwrap();
    h.run_steps(2);
    assert!(h.query_by_label("Replace the lens already in this folder").is_some(), "the Replace box");
    h.state_mut().apply(AppCommand::StartFit { resume: false });
    step_until(&mut h, "the refusal", |a| a.state.error.is_some());
    assert!(h.state().state.error.as_deref().unwrap().contains("already holds a tuned lens"), "{:?}", h.state().state.error);
    assert_eq!(std::fs::read(out.join("params.pt")).unwrap(), params_before);
}

#[test]
fn a_jlens_is_fitted_resumed_and_used_in_the_app() {
    use lens_app::gui::state::JfitSettings;
    use lens_model::analyses::jlens_fit::{JlensFitOptions, checkpoint_path, fit_jacobian_lens, prompts_of};
    use lens_model::lens::jacobian_lens::JacobianLens;
    let opts = GuiOptions { model: Some(bundle().to_path_buf()), device: Device::Cpu, ..GuiOptions::default() };
    let app = LogitLensApp::new_for_test(AppState { prompt: PROMPT.into(), ..AppState::default() }, opts);
    let mut h = Harness::builder().with_size(egui::vec2(1500.0, 940.0)).allow_missing_glyphs().build_ui_state(|ui, app: &mut LogitLensApp| app.show(ui), app);
    step_until(&mut h, "the model", |a| a.state.result.is_some());
    let dir = unique_temp_dir("gui-jfit");
    std::fs::create_dir_all(&dir).unwrap();
    let prompts = dir.join("prompts.txt");
    let mut text = String::from("Too short.\n");
    for i in 0..120 {
        text.push_str(&format!("Prompt {i}: the cat sat on the mat and the dog sat on the rug while a bird sang in tree {}.\n", i * 7));
    }
    std::fs::write(&prompts, &text).unwrap();
    let out = dir.join("lens.pt");
    h.state_mut().apply(AppCommand::ShowWindow(lens_app::gui::command::Window::FitJlens));
    let settings = JfitSettings {
        prompts: Some(prompts.clone()),
        out: Some(out.clone()),
        max_seq_len: 20,
        skip_first: 4,
        dim_batch: 1,
        layers: String::new(),
        f32: true,
        replace: false,
    };
    // Source layers that are not numbers: said, nothing starts.
    h.state_mut().apply(AppCommand::SetJfit(JfitSettings { layers: "0,a".into(), ..settings.clone() }));
    h.state_mut().apply(AppCommand::StartJfit { resume: false });
    assert!(h.state().state.error.as_deref().is_some_and(|e| e.contains("\"a\" is not a layer number")), "{:?}", h.state().state.error);
    assert!(h.state().state.progress.is_none());
    h.state_mut().apply(AppCommand::DismissError);
    h.state_mut().apply(AppCommand::SetJfit(settings.clone()));
    h.run_steps(2);
    assert!(h.query_by_label("Fit").is_some(), "the Fit button");
    assert!(h.query_all_by_label_contains("32 runs").count() == 1, "the runs per prompt are said");
    // Fit, cancel after a few prompts: a checkpoint, no lens, the logit lens still on.
    h.state_mut().apply(AppCommand::StartJfit { resume: false });
    step_until(&mut h, "the first prompts", |a| a.state.jfit_progress.is_some_and(|p| p.done >= 3));
    h.state_mut().apply(AppCommand::Cancel);
    step_until(&mut h, "the cancel", |a| a.state.progress.is_none());
    let stopped = h.state().state.jfit_progress.unwrap();
    assert!(stopped.done < stopped.total, "{stopped:?}");
    assert_eq!(stopped.total, 121);
    assert!(checkpoint_path(&out).is_file());
    assert!(!out.exists());
    assert!(h.state().state.jacobian_lens.is_none());
    h.run_steps(2);
    assert!(h.query_by_label("Resume").is_some());
    // Resume: the fit finishes, the lens is written, opened and decodes the prompt.
    h.state_mut().apply(AppCommand::StartJfit { resume: true });
    step_until(&mut h, "the fitted lens", |a| a.state.jacobian_lens.is_some());
    assert!(out.is_file() && !checkpoint_path(&out).exists());
    let done = h.state().state.jfit_progress.unwrap();
    assert_eq!((done.done, done.total), (121, 121));
    assert!(done.this_run < 121 - 2, "the resumed run did only the rest: {done:?}");
    let (file, report) = h.state().state.jfit_done.clone().unwrap();
    assert_eq!((file.as_path(), report.n_prompts), (out.as_path(), 120));
    h.run_steps(2);
    assert!(h.query_all_by_label_contains("Fitted: 120 prompts").count() == 1, "the window says what the fit did");
    assert_eq!(h.state().state.view.decoder, lens_model::lens::kernel::DecoderKind::JacobianLens);
    step_until(&mut h, "the J-lens run", |a| a.state.result.as_ref().is_some_and(|r| r.report.decoder == "jacobian_lens") && a.state.progress.is_none());
    // The app's lens is the library's uninterrupted fit with the same options.
    let reference = dir.join("reference.pt");
    let mut engine = LensEngine::open(bundle(), Device::Cpu, &Progress::default()).unwrap();
    let lib_opts = JlensFitOptions { max_seq_len: 20, skip_first: 4, dim_batch: 8, half: false, corpus: "prompts.txt".into(), ..JlensFitOptions::default() };
    let r = fit_jacobian_lens(&mut engine, Device::Cpu, &prompts_of(&text), &lib_opts, &reference, &Progress::default(), &mut |_, _| {}).unwrap();
    assert_eq!((r.n_prompts, r.skipped), (120, 1));
    let (a, b) = (JacobianLens::open(&out).unwrap(), JacobianLens::open(&reference).unwrap());
    assert_eq!(a.source_layers(), b.source_layers());
    for (l, m) in &a.matrices {
        let (x, y) = (m.to_f32().unwrap(), b.matrices[l].to_f32().unwrap());
        let scale = y.iter().fold(0f32, |m, v| m.max(v.abs()));
        let gap = x.iter().zip(&y).fold(0f32, |m, (p, q)| m.max((p - q).abs()));
        assert!(gap <= 1e-5 * scale, "layer {l}: {gap} of {scale}");
    }
    // The file is there now: a fit without "Replace" ticked is refused and leaves it.
    let before = std::fs::read(&out).unwrap();
    h.run_steps(2);
    assert!(h.query_by_label("Replace the file already there").is_some(), "the Replace box");
    h.state_mut().apply(AppCommand::StartJfit { resume: false });
    h.run_steps(2);
    assert!(h.state().state.error.as_deref().is_some_and(|e| e.contains("exists")), "{:?}", h.state().state.error);
    assert_eq!(std::fs::read(&out).unwrap(), before);
}

#[test]
fn compare_runs_b_and_the_difference_in_the_app() {
    use lens_app::session::worker::CompareWith;
    let opts = GuiOptions { model: Some(bundle().to_path_buf()), device: Device::Cpu, ..GuiOptions::default() };
    let app = LogitLensApp::new_for_test(AppState { prompt: PROMPT.into(), ..AppState::default() }, opts);
    let mut h = Harness::builder().with_size(egui::vec2(1500.0, 940.0)).allow_missing_glyphs().build_ui_state(|ui, app: &mut LogitLensApp| app.show(ui), app);
    step_until(&mut h, "the model", |a| a.state.result.is_some());
    // Another decoder: B is the raw decoder's report of the same tokens, A − B cell by cell.
    h.state_mut().apply(AppCommand::SetCompare(Some(CompareWith::Decoder(lens_model::lens::kernel::DecoderKind::Raw))));
    step_until(&mut h, "the comparison", |a| a.state.result.as_ref().is_some_and(|r| r.compare.is_some()) && a.state.progress.is_none());
    let res = h.state().state.result.clone().unwrap();
    let cmp = res.compare.as_ref().unwrap();
    assert_eq!((cmp.a.decoder.as_str(), cmp.b.decoder.as_str(), cmp.varied.as_str()), ("logit_lens", "raw", "decoder"));
    assert_eq!(cmp.a, res.report, "A is the report on screen");
    for s in 0..cmp.sites.len() {
        for p in 0..res.report.n_pos() {
            let want = cmp.a.metrics.kl_to_final[s][p] - cmp.b.metrics.kl_to_final[s][p];
            assert!((cmp.diff.kl_to_final[s][p] - want).abs() < 1e-12);
        }
    }
    h.run_steps(2);
    let grids = h.state().geometry.iter().filter(|g| g.metric == h.state().state.view.tab).count();
    assert_eq!(grids, 3, "A, B and A − B");
    // Hovering a cell of B hovers the same cell everywhere (B's grid is the second one).
    let g = h.state().geometry.iter().filter(|g| g.metric == h.state().state.view.tab).nth(1).copied().unwrap();
    h.hover_at(g.center(0, 0));
    h.run_steps(2);
    let hov = h.state().state.hover.expect("a hovered cell");
    let vm = h.state().view_model.clone().unwrap();
    assert_eq!((hov.site, hov.pos), (vm.rows[0], vm.cols[0]));
    // Another prompt of another length: aligned by a longest common token subsequence.
    h.state_mut().apply(AppCommand::SetCompareText("The big cat sat on the mat.".into()));
    h.state_mut().apply(AppCommand::SetCompare(Some(CompareWith::Prompt("The big cat sat on the mat.".into()))));
    step_until(&mut h, "the prompt comparison", |a| {
        a.state.result.as_ref().is_some_and(|r| r.compare.as_ref().is_some_and(|c| c.varied == "prompt")) && a.state.progress.is_none()
    });
    let cmp = h.state().state.result.as_ref().unwrap().compare.clone().unwrap();
    assert_eq!(cmp.aligned_by, "common_tokens");
    assert_eq!(cmp.b.n_pos(), cmp.a.n_pos() + 1);
    h.run_steps(2);
    assert_eq!(h.state().view_model.as_ref().unwrap().cols.len(), cmp.alignment.len(), "only aligned positions are shown");
    assert!(h.query_all_by_label_contains("longest common token subsequence").count() >= 1);
    // Another model of the same tokenizer and depth (another random GPT-2 of the same shape).
    let hf = unique_temp_dir("gui-other-hf");
    write_checkpoint(&hf, &RandomGpt2::tiny(6)).unwrap();
    h.state_mut().apply(AppCommand::SetCompare(Some(CompareWith::Model(hf.clone()))));
    step_until(&mut h, "the model comparison", |a| {
        a.state.result.as_ref().is_some_and(|r| r.compare.as_ref().is_some_and(|c| c.varied == "model")) && a.state.progress.is_none()
    });
    let cmp = h.state().state.result.as_ref().unwrap().compare.clone().unwrap();
    assert_eq!(cmp.aligned_by, "position");
    assert_ne!(cmp.a.metrics.kl_to_final, cmp.b.metrics.kl_to_final, "another model's lens");
    assert_eq!(cmp.b.model.weights_sha256.is_some(), cmp.a.model.weights_sha256.is_some());
    // A bad prompt B: a clear error; off again: one grid per panel.
    h.state_mut().apply(AppCommand::SetCompare(Some(CompareWith::Prompt(String::new()))));
    step_until(&mut h, "the error", |a| a.state.error.is_some());
    assert!(h.state().state.error.as_deref().unwrap().contains("prompt to compare with"), "{:?}", h.state().state.error);
    h.state_mut().apply(AppCommand::SetCompare(None));
    step_until(&mut h, "the plain run", |a| a.state.result.as_ref().is_some_and(|r| r.compare.is_none()) && a.state.progress.is_none());
    h.run_steps(2);
    assert_eq!(h.state().geometry.len(), 1);
}

#[test]
fn a_tuned_lens_given_at_start_is_used_and_a_bad_one_is_said_and_replaced_by_the_logit_lens() {
    // A lens that fits the tiny model: zero translators (the logit lens itself), no hash.
    init_runtime(None).unwrap();
    let engine = LensEngine::open(bundle(), Device::Cpu, &Progress::default()).unwrap();
    let s = &engine.bundle.shape;
    let config = lens_model::lens::tuned_lens::TunedLensConfig {
        base_model_name_or_path: "tiny".into(),
        base_model_revision: None,
        d_model: s.d_model,
        num_hidden_layers: s.n_layers,
        bias: true,
        unembed_hash: None,
        include_input: true,
    };
    let good = unique_temp_dir("gui-start-lens");
    lens_model::lens::tuned_lens::TunedLens::zeros(config).save(&good).unwrap();
    drop(engine);
    let run = |lens: PathBuf| {
        let opts = GuiOptions { model: Some(bundle().to_path_buf()), device: Device::Cpu, tuned_lens: Some(lens), ..GuiOptions::default() };
        let app = LogitLensApp::new_for_test(AppState { prompt: PROMPT.into(), ..AppState::default() }, opts);
        let mut h =
            Harness::builder().with_size(egui::vec2(1500.0, 940.0)).allow_missing_glyphs().build_ui_state(|ui, app: &mut LogitLensApp| app.show(ui), app);
        step_until(&mut h, "a result", |a| a.state.result.is_some() && a.state.progress.is_none());
        h
    };
    let h = run(good.clone());
    let r = &h.state().state.result.as_ref().unwrap().report;
    assert_eq!(r.decoder, "tuned_lens");
    assert_eq!(h.state().state.tuned_lens.as_deref(), Some(good.as_path()));
    assert!(h.state().state.error.is_none(), "{:?}", h.state().state.error);
    // A folder that is not a lens: said (and kept on screen), the logit lens runs instead.
    let mut h = run(unique_temp_dir("gui-no-lens"));
    assert_eq!(h.state().state.result.as_ref().unwrap().report.decoder, "logit_lens");
    assert_eq!(h.state().state.view.decoder, lens_model::lens::kernel::DecoderKind::LogitLens);
    let err = h.state().state.error.clone().unwrap_or_default();
    assert!(err.contains("tuned lens") && err.contains("not a folder") || err.contains("config.json"), "{err}");
    h.state_mut().apply(AppCommand::DismissError);
    assert!(h.state().state.error.is_none());
}

/// Held by the tests that read the memory available (`quant::available_memory`: `auto`'s choice,
/// the corpus window check) while one of them sets `LOGIT_LENS_AVAILABLE_MEMORY`: the tests of
/// this file run in parallel in one process.
static AVAILABLE_MEMORY_ENV: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn opening_a_checkpoint_that_auto_would_quantize_asks_first() {
    let _env = AVAILABLE_MEMORY_ENV.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    // A machine with almost no memory: `auto` picks int4 for any checkpoint (no other test of this
    // file opens a checkpoint through `auto` without holding AVAILABLE_MEMORY_ENV).
    // SAFETY: read only by `quant::available_memory`; every test of this file that reaches it
    // holds AVAILABLE_MEMORY_ENV, as this one does until it removes the variable.
    unsafe { std::env::set_var("LOGIT_LENS_AVAILABLE_MEMORY", "1000") };
    let hf = unique_temp_dir("gui-ask-hf");
    write_checkpoint(&hf, &RandomGpt2::tiny(31)).unwrap();
    let opts = GuiOptions { model: Some(bundle().to_path_buf()), device: Device::Cpu, ..GuiOptions::default() };
    let state = AppState { prompt: PROMPT.into(), ..AppState::default() };
    let app = LogitLensApp::new_for_test(state, opts);
    let mut h = Harness::builder().with_size(egui::vec2(1500.0, 940.0)).allow_missing_glyphs().build_ui_state(|ui, app: &mut LogitLensApp| app.show(ui), app);
    step_until(&mut h, "the first result", |a| a.state.result.is_some());
    assert_eq!(h.state().state.model.as_ref().unwrap().weights, "f32");
    assert!(h.query_by_label("f32 weights").is_some(), "the status bar says which weights ran");

    // Cancel: nothing is opened, the model stays.
    h.state_mut().apply(AppCommand::OpenModel(hf.clone()));
    h.step();
    h.step(); // a new window's first frame is its sizing pass
    let ask = h.state().state.ask_weights.clone().expect("the question is shown");
    assert_eq!(ask.format, lens_model::build::quant::WeightFormat::Int4);
    assert!(ask.reason.contains("may not fit"), "{}", ask.reason);
    h.get_by_label("Cancel").click();
    h.step();
    h.step();
    assert!(h.state().state.ask_weights.is_none());
    assert_eq!(h.state().state.model.as_ref().unwrap().dir, bundle());

    // Open with int4 weights: converted (into the cache, its own entry) and run; the status bar
    // and the report say int4, with auto's reason.
    h.state_mut().apply(AppCommand::OpenModel(hf.clone()));
    h.step();
    h.step();
    h.get_by_label("Open with int4 weights").click();
    step_until(&mut h, "the int4 model's result", |a| {
        a.state.model.as_ref().is_some_and(|m| m.weights == "int4") && a.state.result.as_ref().is_some_and(|r| r.report.run.weights == "int4")
    });
    assert!(h.query_by_label("int4 weights").is_some());
    let m = h.state().state.model.clone().unwrap();
    assert!(m.dir.to_string_lossy().ends_with("-int4"), "{}", m.dir.display());
    // An explicit answer is not auto's choice: no reason recorded.
    assert_eq!(m.weights_reason, None);
    unsafe { std::env::remove_var("LOGIT_LENS_AVAILABLE_MEMORY") };
}

/// `--open-report` (issue 23): a report written by `lens --json` opens with no model and no
/// runtime: the grids, the inspector's top-k texts (from the report's own vocabulary, the same
/// texts the model's tokenizer gives) and the trajectories are there; no worker is started; Run,
/// a pin and corpus mode are refused with a note that says why; a comparison and a corpus report
/// open too; a file that is not a report is a clear error that keeps what is shown.
#[test]
fn a_report_opens_without_its_model() {
    let dir = unique_temp_dir("gui-open-report");
    std::fs::create_dir_all(&dir).unwrap();
    let (model, result) = engine_result(&[]);
    let json = dir.join("r.json");
    result.report.write_json(&json).unwrap();
    assert!(!result.report.vocab.is_empty(), "the report carries its tokens' texts");
    let opts = GuiOptions { open_report: Some(json.clone()), device: Device::Cpu, ..GuiOptions::default() };
    let app = LogitLensApp::new_for_test(AppState { prompt: "something else".into(), ..AppState::default() }, opts);
    let mut h = Harness::builder().with_size(egui::vec2(1500.0, 940.0)).allow_missing_glyphs().build_ui_state(|ui, app: &mut LogitLensApp| app.show(ui), app);
    step_until(&mut h, "the report", |a| a.state.result.is_some());
    let shown = h.state().state.result.clone().unwrap();
    assert_eq!(shown.report, lens_model::LensReport::read_json(&json).unwrap());
    assert_eq!(h.state().state.prompt, PROMPT);
    assert_eq!(h.state().state.report_file.as_deref(), Some(json.as_path()));
    assert!(h.state().view_model.is_some());
    // Every top-1 text is the model's own, read from the report alone.
    let r = &shown.report;
    let final_site = r.sites.len() - 1;
    for p in 0..r.n_pos() {
        let id = *r.metrics.top1_id.get(final_site, p).unwrap();
        let want = model.vocab.iter().find(|e| e.id == id).unwrap().display.clone();
        assert_eq!(lens_app::view::model::token_display(r, &[], id), lens_app::view::model::shown(&want), "position {p}");
    }
    // The inspector shows the selected cell's top-k.
    h.state_mut().apply(AppCommand::Select(Some(lens_app::gui::state::Cell { site: final_site, pos: 2 })));
    h.step();
    let top = r.top_k.ids.get(final_site, 2).unwrap()[0];
    let top_text = lens_app::view::model::token_display(r, &[], top);
    assert!(h.query_all_by_label_contains(&top_text).next().is_some(), "the inspector lists {top_text}");
    // Nothing that needs the model runs.
    let other_decoder = lens_app::gui::state::ViewSettings { decoder: lens_model::lens::kernel::DecoderKind::Raw, ..h.state().state.view.clone() };
    let painting = lens_app::gui::state::ViewSettings { colormap: lens_app::view::theme::ColorMap::Magma, ..h.state().state.view.clone() };
    for cmd in [AppCommand::Run, AppCommand::Pin(" mat".into()), AppCommand::RunCorpus(json.clone()), AppCommand::SetView(other_decoder)] {
        h.state_mut().state.notice = None;
        h.state_mut().apply(cmd.clone());
        h.step();
        assert!(h.state().state.notice.as_deref().unwrap_or_default().contains("without its model"), "{cmd:?}: {:?}", h.state().state.notice);
    }
    assert_eq!(h.state().state.view.decoder.name(), "logit_lens", "the refused decoder change did not stick");
    assert_eq!(h.state().state.pinned, None);
    // A painting setting needs no model.
    h.state_mut().apply(AppCommand::SetView(painting));
    h.step();
    assert_eq!(h.state().state.view.colormap, lens_app::view::theme::ColorMap::Magma);
    assert!(!h.state().worker_started(), "no worker, no runtime");
    assert_eq!(h.state().state.result.as_ref().unwrap().report, shown.report);

    // A comparison file: run A with the comparison.
    let (_, b) = engine_result_of("The dog sat on the mat.", &[]);
    let cmp = lens_model::analyses::compare::compare(result.report.clone(), b.report.clone(), "prompt").unwrap();
    let cjson = dir.join("c.json");
    cmp.write_json(&cjson).unwrap();
    h.state_mut().apply(AppCommand::OpenReport(cjson.clone()));
    step_until(&mut h, "the comparison", |a| a.state.report_file.as_deref() == Some(cjson.as_path()));
    assert!(h.state().state.result.as_ref().unwrap().compare.is_some());
    assert_eq!(h.state().state.compare, Some(lens_app::session::compare::CompareWith::Prompt("The dog sat on the mat.".into())), "the Compare box shows it");

    // A corpus report joins the Corpus window.
    let corpus = lens_model::analyses::corpus::CorpusReport {
        schema: lens_model::analyses::corpus::CORPUS_SCHEMA.into(),
        decoder: "logit_lens".into(),
        n_tokens: 1000,
        ..Default::default()
    };
    let kjson = dir.join("k.json");
    std::fs::write(&kjson, serde_json::to_string(&corpus).unwrap()).unwrap();
    h.state_mut().apply(AppCommand::OpenReport(kjson));
    step_until(&mut h, "the corpus run", |a| !a.state.corpus_runs.is_empty());
    assert_eq!(h.state().state.corpus_runs[0].report, corpus);
    assert!(h.state().state.show_corpus);

    // Not a report: an error; the comparison stays.
    let bad = dir.join("bad.json");
    std::fs::write(&bad, "{\"schema\": \"something/else@9\"}").unwrap();
    h.state_mut().apply(AppCommand::OpenReport(bad));
    step_until(&mut h, "the error", |a| a.state.error.is_some());
    assert!(h.state().state.error.as_deref().unwrap().contains("is not one logit-lens writes"));
    assert!(h.state().state.result.as_ref().unwrap().compare.is_some());
}

/// The app exports what it shows (issue 23): while comparing, Export writes A, B and A − B, the
/// difference being the view model's own (the panels the app paints), and the provenance records
/// the comparison so that `render --from` redraws it.
#[test]
fn export_while_comparing_writes_a_b_and_the_difference() {
    let dir = unique_temp_dir("gui-export-compare");
    std::fs::create_dir_all(&dir).unwrap();
    let opts = GuiOptions { model: Some(bundle().to_path_buf()), device: Device::Cpu, ..GuiOptions::default() };
    let app = LogitLensApp::new_for_test(AppState { prompt: PROMPT.into(), ..AppState::default() }, opts);
    let mut h = Harness::builder().with_size(egui::vec2(1500.0, 940.0)).allow_missing_glyphs().build_ui_state(|ui, app: &mut LogitLensApp| app.show(ui), app);
    step_until(&mut h, "the first result", |a| a.state.result.is_some());
    h.state_mut().apply(AppCommand::SetCompare(Some(lens_app::session::compare::CompareWith::Decoder(lens_model::lens::kernel::DecoderKind::Raw))));
    step_until(&mut h, "the comparison", |a| a.state.result.as_ref().is_some_and(|r| r.compare.is_some()));
    h.step();
    let svg = dir.join("cmp.svg");
    h.state_mut().apply(AppCommand::ExportFigure(svg.clone()));
    assert!(h.state().state.error.is_none(), "{:?}", h.state().state.error);
    let s = std::fs::read_to_string(&svg).unwrap();
    assert!(s.contains(">A · logit_lens: ") && s.contains(">B · raw: ") && s.contains(">A − B: "), "three titled panels");
    // The difference's labels are the view model's (what the app paints).
    let vm = h.state().view_model.clone().unwrap();
    let diff = vm.compare.as_ref().unwrap().diff.panel(h.state().state.view.tab).unwrap().labels.clone();
    let shown = diff.iter().filter(|l| !l.is_empty() && s.contains(&format!(">{}<", lens_app::figure::svg::escape(&lens_app::view::model::shown(l))))).count();
    assert!(shown * 2 > diff.len(), "{shown} of {} difference labels in the figure", diff.len());
    let prov = lens_app::figure::output::read_provenance(&svg).unwrap();
    let c = prov.compare.unwrap();
    assert_eq!((c.varied.as_str(), c.with.as_str()), ("decoder", "raw"));
}

/// The J-lens in the app (issue 26): another model's lens is refused and the decoder stays; the
/// J-lens decoder is greyed until a lens is open; File → Open J-lens decodes with it (sub-block
/// rows and unfitted layers greyed, their labels marked, the status bar naming the lens); Compare
/// runs it against the logit lens.
#[test]
fn a_jacobian_lens_is_opened_greys_its_missing_rows_and_compares_in_the_app() {
    // Models opened with --weights auto read the memory available (see AVAILABLE_MEMORY_ENV).
    let _env = AVAILABLE_MEMORY_ENV.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    use lens_app::session::worker::CompareWith;
    use lens_model::lens::kernel::DecoderKind;
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
    let opts = GuiOptions { model: Some(fixtures.join("tuned_lens/gpt2")), device: Device::Cpu, ..GuiOptions::default() };
    let app =
        LogitLensApp::new_for_test(AppState { prompt: "Sometimes, when people say plasma, they mean a state of matter.".into(), ..AppState::default() }, opts);
    let mut h = Harness::builder().with_size(egui::vec2(1500.0, 940.0)).allow_missing_glyphs().build_ui_state(|ui, app: &mut LogitLensApp| app.show(ui), app);
    step_until(&mut h, "the model", |a| a.state.result.is_some());
    assert!(h.state().state.decoder_missing(DecoderKind::JacobianLens).is_some_and(|w| w.contains("Open J-lens")));
    // Another model's lens (width 48): a clear error, nothing changes.
    h.state_mut().apply(AppCommand::OpenJacobianLens(fixtures.join("jacobian_lens/gemma2/lens_f16.pt")));
    step_until(&mut h, "the refusal", |a| a.state.error.is_some());
    assert!(h.state().state.error.as_deref().unwrap().contains("width d_model 48"), "{:?}", h.state().state.error);
    assert!(h.state().state.jacobian_lens.is_none());
    assert_eq!(h.state().state.view.decoder, DecoderKind::LogitLens);
    h.state_mut().apply(AppCommand::DismissError);
    // The lens fitted at layer 1 only.
    let file = fixtures.join("jacobian_lens/gpt2/lens_partial.pt");
    h.state_mut().apply(AppCommand::OpenJacobianLens(file.clone()));
    step_until(&mut h, "the J-lens run", |a| a.state.result.as_ref().is_some_and(|r| r.report.decoder == "jacobian_lens") && a.state.progress.is_none());
    assert_eq!(h.state().state.jacobian_lens.as_deref(), Some(file.as_path()));
    assert!(h.state().state.decoder_missing(DecoderKind::JacobianLens).is_none());
    let result = h.state().state.result.clone().unwrap();
    let r = &result.report;
    // The worker runs sub-block rows: every .attn row, the embeddings and layer 0 have no matrix.
    let marked: Vec<&str> = r.no_transport.iter().map(|&i| r.sites[i].as_str()).collect();
    assert_eq!(marked, ["embed", "0.attn", "0", "1.attn", "2.attn"]);
    let mut view = h.state().state.view.clone();
    view.subblocks = true;
    let vm = lens_app::view::model::ViewModel::build(&result, &view, &[]);
    for (row, &site) in vm.rows.iter().enumerate() {
        assert_eq!(vm.greyed[row], r.no_transport.contains(&site), "row {row}");
        let n = vm.cols.len();
        for c in &vm.panels[0].colors[row * n..(row + 1) * n] {
            assert_eq!(vm.greyed[row], c.r() == c.g() && c.g() == c.b(), "row {row}: greyed cells are grey, the others coloured");
        }
    }
    h.run_steps(2);
    assert!(h.query_all_by_label_contains("lens_partial.pt").count() >= 1, "the status bar names the lens");
    // Compare with the logit lens: A (J-lens), B (logit lens), A − B.
    h.state_mut().apply(AppCommand::SetCompare(Some(CompareWith::Decoder(DecoderKind::LogitLens))));
    step_until(&mut h, "the comparison", |a| a.state.result.as_ref().is_some_and(|r| r.compare.is_some()) && a.state.progress.is_none());
    let res = h.state().state.result.clone().unwrap();
    assert_eq!(res.report.decoder, "jacobian_lens");
    assert_eq!(res.compare.as_ref().unwrap().b.decoder, "logit_lens");
}

/// The Activation patching window (issue 27): a sweep of the app's prompt into a corrupted one
/// runs on the worker and fills the window's heatmap; a target that is not one token is a clear
/// error; a clicked cell compares the app's run with that patched run (B is the corrupted prompt
/// with the clean activation put in: at the last block's output of the last position, B's final
/// prediction there is A's).
#[test]
fn a_patching_sweep_runs_from_the_app_and_a_cell_opens_its_patched_run() {
    // Models opened with --weights auto read the memory available (see AVAILABLE_MEMORY_ENV).
    let _env = AVAILABLE_MEMORY_ENV.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    use lens_app::gui::state::PatchSettings;
    use lens_app::session::compare::PatchCell;
    use lens_app::session::worker::CompareWith;
    use lens_model::analyses::patch::PatchKind;
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/demo-model");
    let opts = GuiOptions { model: Some(demo), device: Device::Cpu, ..GuiOptions::default() };
    let clean = "The Eiffel Tower is in the city of";
    let corrupt = "The Colosseum is in the city of";
    let app = LogitLensApp::new_for_test(AppState { prompt: clean.into(), ..AppState::default() }, opts);
    let mut h = Harness::builder().with_size(egui::vec2(1500.0, 940.0)).allow_missing_glyphs().build_ui_state(|ui, app: &mut LogitLensApp| app.show(ui), app);
    step_until(&mut h, "the model", |a| a.state.result.is_some() && a.state.progress.is_none());
    h.state_mut().apply(AppCommand::ShowWindow(lens_app::gui::command::Window::Patch));
    // A target of two tokens: refused by name.
    h.state_mut().apply(AppCommand::SetPatch(PatchSettings {
        corrupt: corrupt.into(),
        target: " Parisian".into(),
        against: " Rome".into(),
        kind: PatchKind::Resid,
        estimate: true,
    }));
    h.state_mut().apply(AppCommand::StartPatch);
    step_until(&mut h, "the refusal", |a| a.state.error.is_some() && a.state.progress.is_none());
    assert!(h.state().state.error.as_deref().unwrap().contains("not a single token"), "{:?}", h.state().state.error);
    h.state_mut().apply(AppCommand::DismissError);
    h.state_mut().apply(AppCommand::SetPatch(PatchSettings {
        corrupt: corrupt.into(),
        target: " Paris".into(),
        against: " Rome".into(),
        kind: PatchKind::Resid,
        estimate: true,
    }));
    h.state_mut().apply(AppCommand::StartPatch);
    step_until(&mut h, "the sweep", |a| a.state.patch_result.is_some() && a.state.progress.is_none());
    let r = h.state().state.patch_result.clone().unwrap();
    let g = &r.grids[0];
    let n = r.corrupt_tokens.len();
    assert_eq!((g.sites.len(), g.effect.n_cols()), (9, n));
    assert_eq!(*g.normalized.get(8, n - 1).unwrap(), 1.0, "the last block's output at the last position restores the clean run");
    h.run_steps(2);
    assert!(h.query_all_by_label_contains("normalised: 1 = clean restored").count() >= 1, "the window shows the sweep");
    // Attribution patching's estimate beside it: the library's, on an engine of our own.
    let est = g.estimate.as_ref().expect("the first-order estimate beside the sweep");
    assert!(h.query_all_by_label_contains("first-order estimate, attribution patching").count() >= 1, "the window shows the estimate");
    let dir = h.state().state.model.as_ref().unwrap().dir.clone();
    let mut engine = LensEngine::open(&dir, Device::Cpu, &Progress::default()).unwrap();
    let (ci, ki) = (engine.tokenize(clean, false).unwrap(), engine.tokenize(corrupt, false).unwrap());
    let (t, a) = (engine.tokenizer.token_id(" Paris").unwrap(), engine.tokenizer.token_id(" Rome").unwrap());
    let opts = lens_model::analyses::patch::PatchOptions { kinds: vec![PatchKind::Resid], target: t, against: Some(a) };
    let mut want = lens_model::analyses::patch::patch_sweep(&mut engine, &ci, &ki, &opts, &Progress::default()).unwrap();
    let mut runner = lens_model::run::gradients::GradRunner::open(&engine.bundle, Device::Cpu, 0, &Progress::default()).unwrap();
    lens_model::analyses::attribution_patching::add_estimates(&mut engine, &mut runner, &ci, &ki, &mut want, &Progress::default()).unwrap();
    assert_eq!(est, want.grids[0].estimate.as_ref().unwrap());
    // A cell: the app's run compared with that patched run.
    let cell = PatchCell { corrupt: corrupt.into(), kind: PatchKind::Resid, site: 8, pos: n - 1 };
    h.state_mut().apply(AppCommand::SetCompare(Some(CompareWith::Patched(cell))));
    step_until(&mut h, "the patched run", |a| a.state.result.as_ref().is_some_and(|r| r.compare.is_some()) && a.state.progress.is_none());
    let res = h.state().state.result.clone().unwrap();
    let cmp = res.compare.as_ref().unwrap();
    assert_eq!(cmp.varied, "patch");
    assert_eq!(cmp.b.tokens, r.corrupt_tokens, "B is the corrupted prompt");
    let last = cmp.b.sites.len() - 1;
    assert_eq!(cmp.b.metrics.top1_id[last][n - 1], res.report.metrics.top1_id[last][n - 1], "patched at the last site: A's prediction");
    assert_ne!(cmp.b.metrics.top1_id[4], res.report.metrics.top1_id[4], "the other positions stay the corrupted run's");
}

/// The Steering window (issue 27): turning it on re-runs the lens steered (the report says so);
/// the continuations it generates are those of `analyses::steer::greedy` on the same engine;
/// turning it off runs unsteered again.
#[test]
fn steering_from_the_app_steers_the_runs_and_generates() {
    // Models opened with --weights auto read the memory available (see AVAILABLE_MEMORY_ENV).
    let _env = AVAILABLE_MEMORY_ENV.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    use lens_app::gui::state::SteerSettings;
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/demo-model");
    let opts = GuiOptions { model: Some(demo.clone()), device: Device::Cpu, ..GuiOptions::default() };
    let prompt = "Once upon a time, there was a little girl who was very";
    let app = LogitLensApp::new_for_test(AppState { prompt: prompt.into(), ..AppState::default() }, opts);
    let mut h = Harness::builder().with_size(egui::vec2(1500.0, 940.0)).allow_missing_glyphs().build_ui_state(|ui, app: &mut LogitLensApp| app.show(ui), app);
    step_until(&mut h, "the model", |a| a.state.result.is_some() && a.state.progress.is_none());
    assert!(h.state().state.result.as_ref().unwrap().report.steering.is_none());
    let s = SteerSettings { enabled: true, layer: 5, a: " happy".into(), b: " sad".into(), file: String::new(), alpha: 6.0 };
    h.state_mut().apply(AppCommand::ShowWindow(lens_app::gui::command::Window::Steer));
    h.state_mut().apply(AppCommand::SetSteer(s.clone()));
    step_until(&mut h, "the steered run", |a| a.state.result.as_ref().is_some_and(|r| r.report.steering.is_some()) && a.state.progress.is_none());
    let info = h.state().state.result.as_ref().unwrap().report.steering.clone().unwrap();
    assert_eq!((info.layer, info.alpha, info.source.as_str()), (5, 6.0, " happy| sad"));
    h.run_steps(2);
    assert!(h.query_all_by_label_contains("steered: 6").count() >= 1, "the status bar says the run is steered");
    h.state_mut().apply(AppCommand::Generate(6));
    step_until(&mut h, "the continuations", |a| a.state.steer_generated.is_some() && a.state.progress.is_none());
    let (steered, plain) = h.state().state.steer_generated.clone().unwrap();
    // The same on an engine of our own, on the bundle the app opened.
    init_runtime(None).unwrap();
    let dir = h.state().state.model.as_ref().unwrap().dir.clone();
    let mut engine = LensEngine::open(&dir, Device::Cpu, &Progress::default()).unwrap();
    let ids = engine.tokenize(prompt, false).unwrap();
    let st = lens_model::analyses::steer::steering_of(&mut engine, &s.spec().unwrap(), &Progress::default()).unwrap();
    let want_s = lens_model::analyses::steer::greedy(&mut engine, &ids, Some(&st), 6, &Progress::default()).unwrap();
    let want_p = lens_model::analyses::steer::greedy(&mut engine, &ids, None, 6, &Progress::default()).unwrap();
    let text = |t: Vec<u32>| String::from_utf8_lossy(&t.iter().flat_map(|&id| engine.tokenizer.token_bytes(id)).collect::<Vec<u8>>()).into_owned();
    assert_eq!(steered, text(want_s));
    assert_eq!(plain, text(want_p));
    assert_ne!(steered, plain, "the steering changes the continuation");
    // Off: unsteered again.
    h.state_mut().apply(AppCommand::SetSteer(SteerSettings { enabled: false, ..s }));
    step_until(&mut h, "the unsteered run", |a| a.state.result.as_ref().is_some_and(|r| r.report.steering.is_none()) && a.state.progress.is_none());
}

/// A stand-in for the Python that runs the nnsight module (`python SCRIPT`): a shell script that
/// runs `body` (Python) on the request instead, answering as the module does.
fn stand_in_python(name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = unique_temp_dir(&format!("gui-nnsight-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    let py = dir.join("engine.py");
    std::fs::write(&py, format!("import json, sys, time\nrequest = json.loads(sys.stdin.readline())\n{body}\n")).unwrap();
    let sh = dir.join("python");
    std::fs::write(&sh, format!("#!/bin/sh\nexec python3 {} \"$@\"\n", py.display())).unwrap();
    std::fs::set_permissions(&sh, std::fs::Permissions::from_mode(0o755)).unwrap();
    sh
}

#[test]
fn a_remote_model_runs_from_the_app_with_status_and_cancel() {
    use lens_app::gui::state::RemoteSettings;
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/families/llama_f32");
    // An engine that answers a valid result: top-k ids 0.. at every cell, every rank 1.
    let answer = stand_in_python(
        "answer",
        r#"print(json.dumps({"type": "status", "message": "tracing"}), flush=True)
n, k, t = len(request["ids"]), request["k"], len(request["targets"][0]) + 1
row = [0.0, 1.0, 0.0, 0.0, list(range(k)), [float(k - i) for i in range(k)], [1.0] * t, [1] * t]
print(json.dumps({"type": "result", "protocol": 2, "n_layers": 3, "d_model": 48, "d_vocab": 300, "family": "llama", "n_ctx": 128, "where": "local", "rows": [row] * (4 * n)}), flush=True)"#,
    );
    let mut h = harness(AppState { prompt: "one two three".into(), ..AppState::default() });
    h.state_mut().apply(AppCommand::ShowWindow(lens_app::gui::command::Window::Remote));
    let settings = RemoteSettings { model: model.display().to_string(), ndif: false, python: answer.display().to_string() };
    h.state_mut().apply(AppCommand::SetRemote(settings.clone()));
    h.run_steps(2);
    assert!(h.state().state.result.as_ref().unwrap().report.run.engine.is_none(), "the harness shows a local run first");
    h.get_by_label("Run the lens on nnsight").click();
    h.step();
    assert!(h.state().state.remote_running.is_some(), "the click starts the run");
    step_until(&mut h, "the nnsight report", |a| a.state.remote_running.is_none());
    let a = &h.state().state;
    assert!(a.error.is_none(), "{:?}", a.error);
    let r = &a.result.as_ref().unwrap().report;
    let engine = r.run.engine.as_ref().unwrap();
    assert_eq!((engine.name.as_str(), engine.location.as_str()), ("nnsight", "local"));
    assert_eq!(r.sites, ["embed", "0", "1", "2"]);
    assert!(r.metrics.top1_id.cells().all(|&id| id == 0));
    assert_eq!(a.report_file.as_ref().unwrap().display().to_string(), format!("nnsight:{}", model.display()));
    assert!(!a.show_remote, "the window closes on the report");
    h.run_steps(2);
    assert!(h.query_all_by_label_contains("nnsight (local)").count() >= 1, "the status bar names the engine");
    // A slow engine is cancelled from the window: its process is killed, the report stays.
    let slow = stand_in_python(
        "slow",
        r#"print(json.dumps({"type": "status", "message": "queued on NDIF"}), flush=True)
time.sleep(60)"#,
    );
    h.state_mut().apply(AppCommand::ShowWindow(lens_app::gui::command::Window::Remote));
    h.state_mut().apply(AppCommand::SetRemote(RemoteSettings { python: slow.display().to_string(), ndif: true, ..settings }));
    h.state_mut().apply(AppCommand::RunRemote);
    step_until(&mut h, "the status line", |a| a.state.remote_running.as_ref().is_some_and(|(_, s)| s == "queued on NDIF"));
    h.run_steps(2);
    assert!(h.query_all_by_label_contains("nnsight: queued on NDIF").count() >= 1);
    let t0 = Instant::now();
    h.get_by_label("Cancel").click();
    step_until(&mut h, "the cancel", |a| a.state.remote_running.is_none());
    assert!(t0.elapsed() < Duration::from_secs(10), "cancel took {:?}", t0.elapsed());
    let a = &h.state().state;
    assert_eq!(a.notice.as_deref(), Some("the nnsight run was cancelled"));
    assert!(a.result.as_ref().unwrap().report.run.engine.is_some(), "the report shown stays");
}

/// Gradient × activation from the contributions panel (issue 28): the button runs it on the
/// worker through the model's backward graph, and the result shows it beside the attribution,
/// for the panel's target.
#[test]
fn gradient_x_activation_is_computed_from_the_contributions_panel() {
    let opts = GuiOptions { model: Some(bundle().to_path_buf()), device: Device::Cpu, ..GuiOptions::default() };
    let app = LogitLensApp::new_for_test(AppState { prompt: PROMPT.into(), ..AppState::default() }, opts);
    let mut h = Harness::builder().with_size(egui::vec2(1500.0, 940.0)).allow_missing_glyphs().build_ui_state(|ui, app: &mut LogitLensApp| app.show(ui), app);
    step_until(&mut h, "the first result", |a| a.state.result.as_ref().is_some_and(|r| r.report.n_pos() == r.total_positions));
    assert!(h.state().state.result.as_ref().unwrap().report.gradient_x_activation.is_none());
    h.get_by_label("Gradient × activation").click();
    step_until(&mut h, "gradient × activation", |a| a.state.result.as_ref().is_some_and(|r| r.report.gradient_x_activation.is_some()));
    h.run_steps(2);
    let r = &h.state().state.result.as_ref().unwrap().report;
    let g = r.gradient_x_activation.as_ref().unwrap();
    assert_eq!((g.final_top1.len(), g.final_top1[0].len()), (r.sites.len(), r.n_pos()));
    assert!(g.final_top1.iter().flatten().all(|v| v.is_finite()) && g.final_top1.iter().flatten().any(|v| *v != 0.0));
    let grid = lens_app::gui::panels::contributions::grad_x_act_grid(&h.state().state).unwrap();
    assert_eq!(grid, g.final_top1);
    assert!(h.query_by_label_contains("gradient × activation (sites)").is_some(), "the panel shows it beside the attribution");
    assert!(h.query_by_label("Gradient × activation").is_none(), "the button goes once it is computed");
}
