//! [`LogitLensApp`]: the eframe app. It owns the state and the worker handle, lays out the panels,
//! and applies every [`AppCommand`] in one place ([`LogitLensApp::apply`]).

mod commands;
mod jobs;
mod layout;
mod menu;
mod windows;

use std::path::PathBuf;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};

use egui::{Key, KeyboardShortcut, Modifiers, RichText, Ui};

use super::command::{AppCommand, Window};
use super::outcome::{Effect, JobBook, apply_outcome};
use super::panels::{contributions, heatmap, inspector, prompt, status};
use super::state::{AppState, Cell, Metric, PanelLayout, push_recent};
use super::theme;
use super::view::ViewModel;
use crate::session::worker::{JobKind, ModelSummary, RunResult, Worker};
use lens_model::build::quant::WeightsChoice;

/// Seconds of quiet after an edit before the prompt re-runs.
pub const RERUN_DELAY_S: f64 = 0.6;

pub use crate::session::start::GuiOptions;

/// A lens named on the command line, opened once the model is loaded.
#[derive(Debug, Clone)]
enum LensToOpen {
    /// `--tuned-lens DIR`.
    Tuned(PathBuf),
    /// `--jacobian-lens FILE` (or `published`).
    Jacobian(PathBuf),
}

/// Which file dialog the UI asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialogKind {
    /// Pick a prompt text file.
    Prompt,
    /// Pick a model folder.
    Model,
    /// Pick a result file to show without its model.
    Report,
    /// Choose where to save a figure.
    ExportFigure,
    /// Choose where to save the report data.
    ExportData,
    /// Pick a text file for corpus mode.
    CorpusText,
    /// Pick a tuned lens folder.
    TunedLens,
    /// Pick a J-lens file.
    JacobianLens,
    /// Pick the training text of a fit.
    FitText,
    /// Pick (or create) the output folder of a fit.
    FitOut,
    /// Pick the prompts file of a J-lens fit.
    JfitPrompts,
    /// Pick the lens file a J-lens fit writes.
    JfitOut,
    /// Pick a model folder to compare with.
    CompareModel,
}

/// Outcome of `--screenshot`, shared with the screenshot callback.
#[derive(Debug, Default)]
pub struct ScreenshotOutcome {
    /// `Some(Ok)` once saved, `Some(Err)` when saving failed.
    pub saved: Option<Result<PathBuf, String>>,
    /// The error shown in the window when the screenshot was taken, if any.
    pub app_error: Option<String>,
}

struct ScreenshotPlan {
    path: PathBuf,
    ready_frames: u32,
    requested: bool,
    outcome: Arc<Mutex<ScreenshotOutcome>>,
}

type ModelKey = (usize, usize, crate::gui::state::ViewSettings);

/// The desktop app.
pub struct LogitLensApp {
    /// Everything shown (persisted settings + transient results).
    pub state: AppState,
    /// What the grids paint, derived from the result and the view settings.
    pub view_model: Option<ViewModel>,
    /// Where each grid's cells were painted in the last frame.
    pub geometry: Vec<heatmap::GridGeometry>,
    /// The last file dialog the UI asked for (tests read this instead of opening dialogs).
    pub last_dialog_request: Option<DialogKind>,
    /// Partial results shown (first positions of a run still being computed) since the start.
    pub partials_shown: usize,
    opts: GuiOptions,
    worker: Option<Worker>,
    ctx: Option<egui::Context>,
    /// CPU time of the last painted frame, µs (eframe's measure; 0 under the test harness):
    /// progress repaints wait at least [`PROGRESS_FRAME_FACTOR`] times it.
    frame_cost_us: Arc<std::sync::atomic::AtomicU64>,
    vm_key: Option<ModelKey>,
    cmds: Vec<AppCommand>,
    latest_run: u64,
    /// The corpus job whose outcome is awaited.
    latest_corpus: u64,
    /// The patching sweep whose outcome is awaited.
    latest_patch: u64,
    /// The tuned-lens job (open or fit) whose outcomes are awaited.
    latest_lens: u64,
    /// A tuned lens or J-lens to open once the model is loaded (`--tuned-lens`, `--jacobian-lens`).
    lens_after_load: Option<LensToOpen>,
    latest_load: u64,
    loading_path: Option<(u64, Option<PathBuf>)>,
    run_after_load: bool,
    edited_at: Option<f64>,
    dialogs_enabled: bool,
    dialog_tx: Sender<AppCommand>,
    dialog_rx: Receiver<AppCommand>,
    screenshot: Option<ScreenshotPlan>,
    scroll_to_selection: bool,
}

impl std::fmt::Debug for LogitLensApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogitLensApp").field("prompt", &self.state.prompt).finish()
    }
}

impl LogitLensApp {
    /// The app of a real window: restores the persisted state, applies the options, loads the model.
    pub fn new(cc: &eframe::CreationContext<'_>, opts: GuiOptions) -> Self {
        let state: AppState = cc.storage.and_then(|s| eframe::get_value(s, eframe::APP_KEY)).unwrap_or_default();
        cc.egui_ctx.set_theme(egui::Theme::Dark);
        super::fonts::install(&cc.egui_ctx);
        let mut app = Self::build(state, opts, true);
        app.start(&cc.egui_ctx);
        app
    }

    /// An app without a window or file dialogs (tests and benchmarks). Nothing runs until the
    /// first frame gives it a context: then it loads `opts.model` if given (or the demo model if
    /// `load` is true).
    pub fn new_for_test(state: AppState, opts: GuiOptions) -> Self {
        Self::build(state, opts, false)
    }

    /// An app showing a given result (no engine, no worker until something needs one).
    pub fn with_result(state: AppState, model: ModelSummary, result: RunResult) -> Self {
        let mut app = Self::build(state, GuiOptions::default(), false);
        app.state.model = Some(Arc::new(model));
        app.state.result = Some(Arc::new(result));
        app
    }

    fn build(mut state: AppState, opts: GuiOptions, dialogs_enabled: bool) -> Self {
        if let Some(d) = opts.decoder {
            state.view.decoder = d;
        }
        if let Some(layout) = opts.layout.as_deref() {
            state.view.layout = match layout {
                "side-by-side" => crate::view::settings::PanelLayout::SideBySide,
                "stacked" => crate::view::settings::PanelLayout::Stacked,
                _ => crate::view::settings::PanelLayout::Tabs,
            };
        }
        if opts.subblocks {
            state.view.subblocks = true;
        }
        if let Some(p) = &opts.prompt {
            state.prompt.clone_from(p);
        }
        if let Some(m) = &opts.model {
            state.model_path = Some(m.clone());
        }
        let lens_after_load = match (&opts.tuned_lens, &opts.jacobian_lens) {
            (_, Some(f)) => Some(LensToOpen::Jacobian(f.clone())),
            (Some(d), None) => Some(LensToOpen::Tuned(d.clone())),
            (None, None) => None,
        };
        if let (Some(l), None) = (&lens_after_load, opts.decoder) {
            state.view.decoder = match l {
                LensToOpen::Tuned(_) => lens_model::lens::kernel::DecoderKind::TunedLens,
                LensToOpen::Jacobian(_) => lens_model::lens::kernel::DecoderKind::JacobianLens,
            };
        }
        let (dialog_tx, dialog_rx) = channel();
        let screenshot = opts.screenshot.clone().map(|path| ScreenshotPlan { path, ready_frames: 0, requested: false, outcome: Arc::default() });
        let mut app = Self {
            state,
            view_model: None,
            geometry: Vec::new(),
            last_dialog_request: None,
            partials_shown: 0,
            opts,
            worker: None,
            frame_cost_us: Arc::default(),
            ctx: None,
            vm_key: None,
            cmds: Vec::new(),
            latest_run: 0,
            latest_corpus: 0,
            latest_patch: 0,
            latest_lens: 0,
            lens_after_load: None,
            latest_load: 0,
            loading_path: None,
            run_after_load: false,
            edited_at: None,
            dialogs_enabled,
            dialog_tx,
            dialog_rx,
            screenshot,
            scroll_to_selection: false,
        };
        app.lens_after_load = lens_after_load;
        if let Some(f) = app.opts.prompt_file.clone() {
            app.open_prompt_file(f, false);
        }
        app
    }

    /// Whether the worker thread (and with it the runtime) was started (tests: a report opened
    /// without its model starts none).
    pub fn worker_started(&self) -> bool {
        self.worker.is_some()
    }

    /// The outcome of `--screenshot`, to read after the window closed.
    pub fn screenshot_outcome(&self) -> Option<Arc<Mutex<ScreenshotOutcome>>> {
        self.screenshot.as_ref().map(|s| Arc::clone(&s.outcome))
    }

    /// Starts the worker and loads the model (once a context exists).
    fn start(&mut self, ctx: &egui::Context) {
        if self.ctx.is_some() {
            return;
        }
        self.ctx = Some(ctx.clone());
        if let Some(p) = self.opts.open_report.clone() {
            // A report without its model: nothing is loaded.
            self.open_report(p);
        } else if self.state.model.is_none() {
            let path = self.state.model_path.clone();
            self.load(path);
        }
    }

    fn now(&self) -> f64 {
        self.ctx.as_ref().map_or(0.0, |c| c.input(|i| i.time))
    }

    /// The whole UI of one frame (also used by tests through egui_kittest).
    pub fn show(&mut self, ui: &mut Ui) {
        self.start(&ui.ctx().clone());
        self.poll_worker();
        self.shortcuts(ui);
        self.apply_pending();
        // Debounced re-run after an edit.
        if let Some(t) = self.edited_at {
            let wait = t + RERUN_DELAY_S - self.now();
            if wait <= 0.0 {
                self.run();
            } else {
                ui.ctx().request_repaint_after(std::time::Duration::from_secs_f64(wait));
            }
        }
        self.refresh_view_model();

        egui::Panel::top("menu").show(ui, |ui| self.menu(ui));
        if let Some(err) = self.state.error.clone() {
            egui::Panel::top("error").frame(egui::Frame::new().fill(theme::ERROR_BG).inner_margin(6.0)).show(ui, |ui| {
                ui.horizontal(|ui| {
                    ui.label(RichText::new("⚠").color(theme::ERROR_FG).strong());
                    ui.label(RichText::new(&err).color(theme::ERROR_FG));
                    ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                        if ui.button("✕").on_hover_text("Dismiss").clicked() {
                            self.cmds.push(AppCommand::DismissError);
                        }
                    });
                });
            });
        }
        egui::Panel::bottom("status").show(ui, |ui| status::status_ui(ui, &self.state, &mut self.cmds));
        egui::Panel::top("prompt").show(ui, |ui| {
            if let Some(f) = &self.state.report_file {
                ui.label(
                    RichText::new(format!(
                        "Report {} shown without its model: the prompt, pins and decoder cannot change (File → Open model… runs the lens again)",
                        f.display()
                    ))
                    .color(theme::DIM_TEXT),
                );
            }
            // The prompt and the pin cannot be edited while a report is shown without its model
            // (the toolbar's run settings are refused with a note when changed).
            ui.add_enabled_ui(self.state.report_file.is_none(), |ui| {
                let busy = self.state.progress.is_some();
                prompt::prompt_ui(ui, &mut self.state.prompt, busy, &mut self.cmds);
                let mut pin_text = std::mem::take(&mut self.state.pin_text);
                ui.horizontal(|ui| {
                    prompt::pin_ui(ui, &mut pin_text, &self.state, &mut self.cmds);
                });
                self.state.pin_text = pin_text;
            });
            prompt::toolbar_ui(ui, &self.state, &mut self.cmds);
        });
        if self.state.view.show_inspector {
            egui::Panel::right("inspector").resizable(true).default_size(320.0).min_size(240.0).show(ui, |ui| {
                // Wide content scrolls instead of widening the panel: hovering a cell must not
                // move the lens panels under the pointer.
                egui::ScrollArea::both().auto_shrink([false, false]).show(ui, |ui| inspector::inspector_ui(ui, &self.state, &mut self.cmds));
            });
        }
        if self.state.view.show_contributions {
            egui::Panel::bottom("contributions")
                .resizable(true)
                .default_size(240.0)
                .min_size(160.0)
                .show(ui, |ui| contributions::contributions_ui(ui, &self.state, &mut self.cmds));
        }
        egui::CentralPanel::default().show(ui, |ui| self.lens_panels(ui));
        if self.scroll_to_selection && !self.geometry.is_empty() {
            self.ensure_selection_visible();
            ui.ctx().request_repaint();
        }
        let ctx = ui.ctx().clone();
        self.windows(&ctx);
        self.apply_pending();
        self.screenshot_step(&ctx);
    }

    fn screenshot_step(&mut self, ctx: &egui::Context) {
        let Some(plan) = self.screenshot.as_mut() else { return };
        let settled =
            self.state.progress.is_none() && (self.state.result.is_some() || self.state.error.is_some()) && self.cmds.is_empty() && self.edited_at.is_none();
        if !plan.requested {
            if settled {
                plan.ready_frames += 1;
            }
            if plan.ready_frames >= 3 {
                plan.requested = true;
                if let Ok(mut o) = plan.outcome.lock() {
                    o.app_error.clone_from(&self.state.error);
                }
                let outcome = Arc::clone(&plan.outcome);
                let path = plan.path.clone();
                let repaint = ctx.clone();
                ctx.request_screenshot(move |img| {
                    let saved = save_png(&path, &img).map(|()| path.clone());
                    if let Ok(mut o) = outcome.lock() {
                        o.saved = Some(saved);
                    }
                    repaint.request_repaint();
                });
            }
            // Frames only while counting down to the shot: until the result is there the worker's
            // outcomes repaint (painting continuously meanwhile took half the CPU from the lens).
            if settled {
                ctx.request_repaint();
            }
        } else if plan.outcome.lock().map(|o| o.saved.is_some()).unwrap_or(true) {
            ctx.send_viewport_cmd(egui::ViewportCommand::Close);
        } else {
            ctx.request_repaint_after(std::time::Duration::from_millis(20));
        }
    }
}

/// Writes an egui image as PNG.
pub fn save_png(path: &std::path::Path, img: &egui::ColorImage) -> Result<(), String> {
    let [w, h] = img.size;
    let bytes: Vec<u8> = img.pixels.iter().flat_map(|c| c.to_srgba_unmultiplied()).collect();
    let Some(buf) = image::RgbaImage::from_raw(w as u32, h as u32, bytes) else {
        return Err("screenshot has an inconsistent size".into());
    };
    buf.save_with_format(path, image::ImageFormat::Png).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Progress repaints wait at least this many times the last frame's CPU time, so that painting
/// takes at most about a tenth of a core while the lens runs (a frame of a big grid costs
/// ~100 ms with software GL, and the lens wants every core).
pub const PROGRESS_FRAME_FACTOR: u32 = 10;

impl eframe::App for LogitLensApp {
    fn ui(&mut self, ui: &mut Ui, frame: &mut eframe::Frame) {
        if let Some(cpu) = frame.info().cpu_usage {
            self.frame_cost_us.store((f64::from(cpu) * 1e6) as u64, std::sync::atomic::Ordering::Relaxed);
        }
        self.show(ui);
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        if self.screenshot.is_none() {
            eframe::set_value(storage, eframe::APP_KEY, &self.state);
        }
    }
}
