//! [`LogitLensApp`]: the eframe app. It owns the state and the worker handle, lays out the panels,
//! and applies every [`AppCommand`] in one place ([`LogitLensApp::apply`]).

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

/// Seconds of quiet after an edit before the prompt re-runs.
pub const RERUN_DELAY_S: f64 = 0.6;

pub use crate::session::start::GuiOptions;

/// Which file dialog the UI asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialogKind {
    /// Pick a prompt text file.
    Prompt,
    /// Pick a model folder.
    Model,
    /// Choose where to save a figure.
    ExportFigure,
    /// Choose where to save the report data.
    ExportData,
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
    vm_key: Option<ModelKey>,
    cmds: Vec<AppCommand>,
    latest_run: u64,
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
        if opts.subblocks {
            state.view.subblocks = true;
        }
        if let Some(p) = &opts.prompt {
            state.prompt.clone_from(p);
        }
        if let Some(m) = &opts.model {
            state.model_path = Some(m.clone());
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
            ctx: None,
            vm_key: None,
            cmds: Vec::new(),
            latest_run: 0,
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
        if let Some(f) = app.opts.prompt_file.clone() {
            app.open_prompt_file(f, false);
        }
        app
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
        if self.state.model.is_none() {
            let path = self.state.model_path.clone();
            self.load(path);
        }
    }

    fn worker(&mut self) -> Option<&mut Worker> {
        if self.worker.is_none() {
            let ctx = self.ctx.clone()?;
            let repaint: crate::session::worker::Repaint = Arc::new(move |after: Option<std::time::Duration>| match after {
                None => ctx.request_repaint(),
                Some(d) => ctx.request_repaint_after(d),
            });
            match Worker::spawn(repaint, self.opts.piece_positions) {
                Ok(w) => self.worker = Some(w),
                Err(e) => {
                    self.state.error = Some(format!("cannot start the worker thread: {e:#}"));
                    return None;
                }
            }
        }
        self.worker.as_mut()
    }

    fn load(&mut self, path: Option<PathBuf>) {
        let (device, ort_lib) = (self.opts.device, self.opts.ort_lib.clone());
        let Some(w) = self.worker() else { return };
        let id = w.submit(JobKind::Load { model: path.clone(), device, ort_lib });
        self.latest_load = id;
        self.loading_path = Some((id, path));
        self.run_after_load = true;
    }

    fn run(&mut self) {
        self.edited_at = None;
        if self.state.prompt.is_empty() {
            self.state.error = Some("the prompt is empty".into());
            return;
        }
        if self.state.model.is_none() && self.loading_path.is_none() {
            self.state.error = Some("no model is loaded: open one with File → Open model… (Ctrl+Shift+O)".into());
            return;
        }
        let job = JobKind::Run {
            text: self.state.prompt.clone(),
            pinned: self.state.pinned.into_iter().collect(),
            k: self.state.view.top_k,
            decoder: self.state.view.decoder,
            truncate_left: self.state.view.truncate_left,
        };
        if let Some(w) = self.worker() {
            self.latest_run = w.submit(job);
        }
    }

    fn open_prompt_file(&mut self, path: PathBuf, run: bool) {
        match crate::session::prompt::read_prompt_file(&path) {
            Ok(text) if text.is_empty() => self.state.error = Some(format!("{} is empty", path.display())),
            Ok(text) => {
                self.state.prompt = text;
                push_recent(&mut self.state.recent_prompts, path);
                self.state.error = None;
                if run {
                    self.run();
                }
            }
            Err(e) => self.state.error = Some(format!("{e:#}")),
        }
    }

    fn vocab_find(&self, typed: &str) -> Option<u32> {
        let q = typed.replace('␣', " ");
        let vocab = self.state.model.as_ref()?.vocab.clone();
        vocab.iter().find(|e| e.text == q).map(|e| e.id)
    }

    /// Queues a command (applied at the end of the frame, or by [`Self::apply_pending`]).
    pub fn push(&mut self, cmd: AppCommand) {
        self.cmds.push(cmd);
    }

    /// Applies the queued commands now.
    pub fn apply_pending(&mut self) {
        for cmd in std::mem::take(&mut self.cmds) {
            self.apply(cmd);
        }
    }

    /// Applies one command: the single place where the state changes on user request.
    pub fn apply(&mut self, cmd: AppCommand) {
        match cmd {
            AppCommand::Run => self.run(),
            AppCommand::PromptEdited => self.edited_at = Some(self.now()),
            AppCommand::OpenPromptFile(p) => self.open_prompt_file(p, true),
            AppCommand::OpenModel(p) => {
                let hub_id = !p.exists() && p.to_str().is_some_and(lens_model::resolve::is_hub_id);
                if p.is_dir() || hub_id {
                    self.state.show_open_id = false;
                    self.load(Some(p));
                } else {
                    self.state.error = Some(format!(
                        "{} is not a folder or a Hugging Face id (org/name): open a lens bundle folder, a Hugging Face checkpoint folder or an id",
                        p.display()
                    ));
                }
            }
            AppCommand::RequestPromptDialog => self.open_dialog(DialogKind::Prompt),
            AppCommand::RequestModelDialog => self.open_dialog(DialogKind::Model),
            AppCommand::Cancel => {
                if let Some(w) = &self.worker {
                    w.cancel_all();
                }
            }
            AppCommand::Hover(c) => self.state.hover = c,
            AppCommand::Select(c) => self.state.selection = c,
            AppCommand::MoveSelection(dc, dr) => self.move_selection(dc, dr),
            AppCommand::Pin(text) => match self.vocab_find(&text) {
                Some(id) => self.apply(AppCommand::PinId(id)),
                None if text.trim().is_empty() => self.apply(AppCommand::Unpin),
                None => self.state.error = Some(format!("{text:?} is not a single token of this model's vocabulary (pick one of the suggestions)")),
            },
            AppCommand::PinId(id) => {
                self.state.pinned = Some(id);
                if let Some(e) = self.state.model.as_ref().and_then(|m| m.vocab.get(id as usize).cloned()) {
                    self.state.pin_text = e.text;
                }
                self.state.view.rank_target = crate::gui::state::RankTarget::Pinned;
                self.run();
            }
            AppCommand::Unpin => {
                if self.state.pinned.take().is_some() {
                    self.state.pin_text.clear();
                    if self.state.view.rank_target == crate::gui::state::RankTarget::Pinned {
                        self.state.view.rank_target = crate::gui::state::RankTarget::FinalTop1;
                    }
                    self.run();
                }
            }
            AppCommand::SetView(v) => {
                // A run setting (top-k, decoder) re-runs the lens on the prompt shown; the
                // worker reuses the forward pass.
                let rerun = self.state.view.run_differs(&v) && self.state.model.is_some() && !self.state.prompt.is_empty();
                if v.hide_bos != self.state.view.hide_bos
                    && let Some(src) = &self.state.model_source
                    && let Some(m) = self.state.recent_models.iter_mut().find(|m| &m.source == src)
                {
                    m.hide_bos = v.hide_bos;
                }
                self.state.view = v;
                if rerun {
                    self.run();
                }
            }
            AppCommand::Scroll(s) => self.state.scroll = s,
            AppCommand::DismissError => self.state.error = None,
            AppCommand::ShowExport => self.state.show_export = true,
            AppCommand::ShowWindow(w) => match w {
                Window::OpenHubId => self.state.show_open_id = true,
                Window::Shortcuts => self.state.show_shortcuts = true,
                Window::About => self.state.show_about = true,
            },
            AppCommand::RequestExportFigureDialog => self.open_dialog(DialogKind::ExportFigure),
            AppCommand::RequestExportDataDialog => self.open_dialog(DialogKind::ExportData),
            AppCommand::ExportFigure(path) => self.export_figure(&path),
            AppCommand::ExportData(path) => self.export_data(&path),
            AppCommand::Quit => {
                if let Some(ctx) = &self.ctx {
                    ctx.send_viewport_cmd(egui::ViewportCommand::Close);
                }
            }
        }
    }

    /// Writes the current view as a figure (the format follows the file extension).
    fn export_figure(&mut self, path: &std::path::Path) {
        self.refresh_view_model();
        let (Some(vm), Some(res)) = (self.view_model.as_ref(), self.state.result.as_ref()) else {
            self.state.error = Some("nothing to export yet: run the lens first".into());
            return;
        };
        let model = self.state.model.as_deref();
        let pin = self.state.pinned.map(|_| self.state.pin_text.clone());
        match crate::figure::export::figure_from_app(vm, res, &self.state.view, &self.state.export, model, pin, path) {
            Ok(()) => {
                self.state.notice = Some(format!("exported {}", path.display()));
                self.state.error = None;
            }
            Err(e) => self.state.error = Some(format!("export failed: {e:#}")),
        }
    }

    /// Writes the report as JSON or as a CSV table (by extension).
    fn export_data(&mut self, path: &std::path::Path) {
        let Some(res) = self.state.result.as_ref() else {
            self.state.error = Some("nothing to export yet: run the lens first".into());
            return;
        };
        let vocab = self.state.model.as_ref().map(|m| Arc::clone(&m.vocab));
        let text = |id: u32| vocab.as_ref().and_then(|v| v.get(id as usize)).map_or_else(|| format!("<{id}>"), |e| e.text.clone());
        match crate::figure::export::data(&res.report, path, &text) {
            Ok(()) => {
                self.state.notice = Some(format!("exported {}", path.display()));
                self.state.error = None;
            }
            Err(e) => self.state.error = Some(format!("export failed: {e:#}")),
        }
    }

    fn now(&self) -> f64 {
        self.ctx.as_ref().map_or(0.0, |c| c.input(|i| i.time))
    }

    fn open_dialog(&mut self, kind: DialogKind) {
        self.last_dialog_request = Some(kind);
        if !self.dialogs_enabled {
            return;
        }
        let tx = self.dialog_tx.clone();
        let ctx = self.ctx.clone();
        let export_ext = self.state.export.format.clone();
        // rfd blocks until the user answers: never on the UI thread.
        let spawned = std::thread::Builder::new().name("file-dialog".into()).spawn(move || {
            let cmd = match kind {
                DialogKind::Prompt => rfd::FileDialog::new()
                    .set_title("Open prompt")
                    .add_filter("Text", &["txt", "md", "text"])
                    .add_filter("All files", &["*"])
                    .pick_file()
                    .map(AppCommand::OpenPromptFile),
                DialogKind::Model => {
                    rfd::FileDialog::new().set_title("Open model folder (lens bundle or Hugging Face checkpoint)").pick_folder().map(AppCommand::OpenModel)
                }
                DialogKind::ExportFigure => rfd::FileDialog::new()
                    .set_title("Export figure")
                    .set_file_name(format!("logit-lens.{export_ext}"))
                    .add_filter("Figure", &["pdf", "svg", "png"])
                    .save_file()
                    .map(AppCommand::ExportFigure),
                DialogKind::ExportData => rfd::FileDialog::new()
                    .set_title("Export data")
                    .set_file_name("logit-lens-report.json")
                    .add_filter("JSON report", &["json"])
                    .add_filter("CSV table", &["csv"])
                    .add_filter("numpy arrays", &["npz"])
                    .save_file()
                    .map(AppCommand::ExportData),
            };
            if let Some(cmd) = cmd {
                let _ = tx.send(cmd);
                if let Some(ctx) = ctx {
                    ctx.request_repaint();
                }
            }
        });
        if let Err(e) = spawned {
            self.state.error = Some(format!("cannot open a file dialog: {e}"));
        }
    }

    fn move_selection(&mut self, dc: i32, dr: i32) {
        let Some(vm) = &self.view_model else { return };
        let (row, col) = self.state.selection.and_then(|s| vm.index_of(s.site, s.pos)).unwrap_or((0, vm.cols.len().saturating_sub(1)));
        let clamp = |v: usize, d: i32, n: usize| -> usize { (v as i64 + i64::from(d)).clamp(0, n.saturating_sub(1) as i64) as usize };
        let row = clamp(row, dr, vm.rows.len());
        let col = clamp(col, dc, vm.cols.len());
        if let (Some(&site), Some(&pos)) = (vm.rows.get(row), vm.cols.get(col)) {
            self.state.selection = Some(Cell { site, pos });
            self.scroll_to_selection = true;
        }
    }

    /// Scrolls the grids so that the selected cell is visible (after keyboard moves and new results).
    fn ensure_selection_visible(&mut self) {
        if !std::mem::take(&mut self.scroll_to_selection) {
            return;
        }
        let (Some(vm), Some(g), Some(sel)) = (&self.view_model, self.geometry.first(), self.state.selection) else { return };
        let Some((row, col)) = vm.index_of(sel.site, sel.pos) else { return };
        let cell = egui::Rect::from_min_size(egui::pos2(col as f32 * g.cell.x, row as f32 * g.cell.y), g.cell);
        let view = g.cells.size();
        let mut s = self.state.scroll;
        if cell.left() < s.x {
            s.x = cell.left();
        } else if cell.right() > s.x + view.x {
            s.x = cell.right() - view.x;
        }
        if cell.top() < s.y {
            s.y = cell.top();
        } else if cell.bottom() > s.y + view.y {
            s.y = cell.bottom() - view.y;
        }
        self.state.scroll = s.max(egui::Vec2::ZERO);
    }

    /// Rebuilds the view model when the result or the settings that shape it changed.
    fn refresh_view_model(&mut self) {
        let Some(res) = self.state.result.clone() else {
            self.view_model = None;
            self.vm_key = None;
            return;
        };
        let mut shape_view = self.state.view.clone();
        // Settings that do not change the derived cells.
        let d = crate::gui::state::ViewSettings::default();
        shape_view.cell_w = d.cell_w;
        shape_view.cell_h = d.cell_h;
        shape_view.layout = d.layout;
        shape_view.tab = d.tab;
        shape_view.shown = d.shown;
        shape_view.show_inspector = d.show_inspector;
        shape_view.show_contributions = d.show_contributions;
        shape_view.contrib_target = d.contrib_target;
        let vocab_ptr = self.state.model.as_ref().map_or(0, |m| Arc::as_ptr(&m.vocab) as usize);
        let key = (Arc::as_ptr(&res) as usize, vocab_ptr, shape_view);
        if self.vm_key.as_ref() != Some(&key) {
            let vocab = self.state.model.as_ref().map(|m| Arc::clone(&m.vocab)).unwrap_or_default();
            self.view_model = Some(ViewModel::build(&res, &self.state.view, &vocab));
            self.vm_key = Some(key);
        }
    }

    fn poll_worker(&mut self) {
        let Some(w) = self.worker.as_mut() else { return };
        let outcomes = w.poll();
        self.state.progress = w.progress();
        for o in outcomes {
            let latest = if o.was_load { self.latest_load } else { self.latest_run };
            if o.id != latest {
                continue; // stale
            }
            let mut book = JobBook { loading: self.loading_path.take(), run_after_load: self.run_after_load, partials_shown: self.partials_shown };
            let effects = apply_outcome(&mut self.state, &mut book, o.was_load, o.kind);
            self.loading_path = book.loading;
            self.run_after_load = book.run_after_load;
            self.partials_shown = book.partials_shown;
            for e in effects {
                match e {
                    Effect::RunLens => self.run(),
                    Effect::ScrollToSelection => self.scroll_to_selection = true,
                    Effect::DropViewModel => {
                        self.view_model = None;
                        self.vm_key = None;
                    }
                }
            }
        }
        while let Ok(cmd) = self.dialog_rx.try_recv() {
            self.cmds.push(cmd);
        }
    }

    fn shortcuts(&mut self, ui: &mut Ui) {
        let (model, prompt, run, export) = ui.input_mut(|i| {
            let model = i.consume_shortcut(&KeyboardShortcut::new(Modifiers::COMMAND | Modifiers::SHIFT, Key::O));
            let prompt = i.consume_shortcut(&KeyboardShortcut::new(Modifiers::COMMAND, Key::O));
            let run = i.consume_shortcut(&KeyboardShortcut::new(Modifiers::COMMAND, Key::Enter));
            let export = i.consume_shortcut(&KeyboardShortcut::new(Modifiers::COMMAND, Key::E));
            (model, prompt, run, export)
        });
        if export {
            self.cmds.push(AppCommand::ShowExport);
        }
        if model {
            self.cmds.push(AppCommand::RequestModelDialog);
        }
        if prompt {
            self.cmds.push(AppCommand::RequestPromptDialog);
        }
        if run {
            self.cmds.push(AppCommand::Run);
        }
        let typing = ui.ctx().memory(|m| m.focused().is_some());
        let (esc, moves) = ui.input(|i| {
            let mut moves = Vec::new();
            if !typing {
                for (k, dc, dr) in [(Key::ArrowLeft, -1, 0), (Key::ArrowRight, 1, 0), (Key::ArrowUp, 0, -1), (Key::ArrowDown, 0, 1)] {
                    if i.key_pressed(k) {
                        moves.push(AppCommand::MoveSelection(dc, dr));
                    }
                }
            }
            (i.key_pressed(Key::Escape), moves)
        });
        self.cmds.extend(moves);
        if esc && self.state.pinned.is_some() {
            self.cmds.push(AppCommand::Unpin);
        }
        let dropped: Vec<PathBuf> = ui.input(|i| i.raw.dropped_files.iter().map(|f| f.path().to_path_buf()).filter(|p| !p.as_os_str().is_empty()).collect());
        for p in dropped {
            self.cmds.push(if p.is_dir() { AppCommand::OpenModel(p) } else { AppCommand::OpenPromptFile(p) });
        }
    }

    fn menu(&mut self, ui: &mut Ui) {
        let cmds = &mut self.cmds;
        let state = &mut self.state;
        egui::MenuBar::new().ui(ui, |ui| {
            ui.menu_button("File", |ui| {
                if ui.add(egui::Button::new("Open prompt…").shortcut_text("Ctrl+O")).clicked() {
                    cmds.push(AppCommand::RequestPromptDialog);
                }
                if ui.add(egui::Button::new("Open model…").shortcut_text("Ctrl+Shift+O")).clicked() {
                    cmds.push(AppCommand::RequestModelDialog);
                }
                if ui.button("Open Hugging Face model…").clicked() {
                    cmds.push(AppCommand::ShowWindow(Window::OpenHubId));
                }
                ui.menu_button("Recent prompts", |ui| {
                    if state.recent_prompts.is_empty() {
                        ui.label("none");
                    }
                    for p in &state.recent_prompts {
                        if ui.button(p.display().to_string()).clicked() {
                            cmds.push(AppCommand::OpenPromptFile(p.clone()));
                        }
                    }
                });
                ui.menu_button("Recent models", |ui| {
                    if state.recent_models.is_empty() {
                        ui.label("none");
                    }
                    for m in &state.recent_models {
                        let kind = if m.is_hub_id() { "Hugging Face id" } else { "folder" };
                        if ui.button(m.label()).on_hover_text(format!("{kind}: {}", m.source.display())).clicked() {
                            cmds.push(AppCommand::OpenModel(m.source.clone()));
                        }
                    }
                });
                ui.separator();
                if ui.add(egui::Button::new("Export figure…").shortcut_text("Ctrl+E")).clicked() {
                    cmds.push(AppCommand::ShowExport);
                }
                if ui.button("Export data… (JSON / CSV / NPZ)").clicked() {
                    cmds.push(AppCommand::RequestExportDataDialog);
                }
                ui.separator();
                if ui.add(egui::Button::new("Quit").shortcut_text("Ctrl+Q")).clicked() {
                    cmds.push(AppCommand::Quit);
                }
            });
            ui.menu_button("View", |ui| {
                let mut v = state.view.clone();
                ui.checkbox(&mut v.show_inspector, "Inspector");
                ui.checkbox(&mut v.show_contributions, "Sub-block contributions");
                ui.separator();
                ui.radio_value(&mut v.layout, PanelLayout::Tabs, "Panels as tabs");
                ui.radio_value(&mut v.layout, PanelLayout::SideBySide, "Panels side by side");
                ui.radio_value(&mut v.layout, PanelLayout::Stacked, "Panels stacked");
                ui.separator();
                ui.checkbox(&mut v.subblocks, "Sub-block rows (.attn)");
                ui.checkbox(&mut v.flip, "Input on top");
                ui.menu_button("Colour map", |ui| {
                    for c in theme::ColorMap::ALL {
                        ui.radio_value(&mut v.colormap, c, c.name());
                    }
                });
                ui.menu_button("Decoder", |ui| {
                    for d in lens_model::lens::DecoderKind::ALL {
                        ui.radio_value(&mut v.decoder, d, d.label());
                    }
                });
                ui.menu_button("Top-k", |ui| {
                    for k in [5, 10, 20] {
                        ui.radio_value(&mut v.top_k, k, k.to_string());
                    }
                });
                ui.separator();
                if ui.button("Reset view").clicked() {
                    v = crate::gui::state::ViewSettings::default();
                }
                if v != state.view {
                    cmds.push(AppCommand::SetView(v));
                }
            });
            ui.menu_button("Help", |ui| {
                if ui.button("Keyboard shortcuts").clicked() {
                    cmds.push(AppCommand::ShowWindow(Window::Shortcuts));
                }
                if ui.button("About logit-lens").clicked() {
                    cmds.push(AppCommand::ShowWindow(Window::About));
                }
            });
        });
    }

    fn windows(&mut self, ctx: &egui::Context) {
        let mut open_id = self.state.show_open_id;
        let id_text = &mut self.state.open_id_text;
        let recent = &self.state.recent_models;
        let cmds = &mut self.cmds;
        egui::Window::new("Open Hugging Face model").open(&mut open_id).resizable(false).show(ctx, |ui| {
            ui.label("A model id such as Qwen/Qwen2.5-0.5B (optionally @revision): taken from the local Hugging Face cache, or downloaded into it (HF_TOKEN for gated models).");
            ui.horizontal(|ui| {
                let label = ui.label("Id");
                let resp = ui.add(egui::TextEdit::singleline(id_text).hint_text("org/name").desired_width(260.0)).labelled_by(label.id);
                let enter = resp.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
                let valid = lens_model::resolve::is_hub_id(id_text.trim());
                let clicked = ui.add_enabled(valid, egui::Button::new("Open")).clicked();
                if valid && (clicked || enter) {
                    cmds.push(AppCommand::OpenModel(PathBuf::from(id_text.trim())));
                }
            });
            // Models opened before, ids and folders, with their family and BOS choice.
            if !recent.is_empty() {
                ui.separator();
                ui.label("Recent");
                for m in recent {
                    let kind = if m.is_hub_id() { "Hugging Face id" } else { "folder" };
                    if ui.button(m.label()).on_hover_text(format!("{kind}: {}", m.source.display())).clicked() {
                        cmds.push(AppCommand::OpenModel(m.source.clone()));
                    }
                }
            }
        });
        if !open_id {
            self.state.show_open_id = false;
        }
        egui::Window::new("Keyboard shortcuts").open(&mut self.state.show_shortcuts).resizable(false).show(ctx, |ui| {
            egui::Grid::new("keys").striped(true).show(ui, |ui| {
                for (k, what) in [
                    ("Ctrl+Enter", "run the lens on the prompt"),
                    ("Ctrl+O", "open a prompt file"),
                    ("Ctrl+Shift+O", "open a model folder"),
                    ("Ctrl+E", "export the current view as a figure"),
                    ("← → ↑ ↓", "move the selected cell"),
                    ("Esc", "clear the pinned token"),
                    ("wheel / drag", "scroll the grids (together)"),
                    ("Ctrl+wheel", "zoom the grids"),
                ] {
                    ui.monospace(k);
                    ui.label(what);
                    ui.end_row();
                }
            });
        });
        let mut open = self.state.show_export;
        let cmds = &mut self.cmds;
        let export = &mut self.state.export;
        egui::Window::new("Export figure").open(&mut open).resizable(false).show(ctx, |ui| {
            egui::Grid::new("export").num_columns(2).show(ui, |ui| {
                ui.label("Format");
                ui.horizontal(|ui| {
                    for f in ["pdf", "svg", "png"] {
                        ui.radio_value(&mut export.format, f.to_string(), f.to_uppercase());
                    }
                });
                ui.end_row();
                let width = ui.label("Width");
                ui.add(egui::DragValue::new(&mut export.width_in).range(1.0..=40.0).speed(0.1).suffix(" in")).labelled_by(width.id);
                ui.end_row();
                let dpi = ui.label("PNG resolution");
                ui.add_enabled(export.format == "png", egui::DragValue::new(&mut export.dpi).range(36.0..=1200.0).speed(5.0).suffix(" dpi"))
                    .labelled_by(dpi.id);
                ui.end_row();
                ui.label("Panels");
                ui.horizontal(|ui| {
                    ui.radio_value(&mut export.all_panels, false, "current panel");
                    ui.radio_value(&mut export.all_panels, true, "all shown panels");
                });
                ui.end_row();
            });
            ui.label(
                egui::RichText::new("The figure is the panel: same cells, colours, labels and colour bar; provenance is stored in the file.")
                    .small()
                    .color(theme::DIM_TEXT),
            );
            if ui.button("Save…").clicked() {
                cmds.push(AppCommand::RequestExportFigureDialog);
            }
        });
        self.state.show_export = open;
        egui::Window::new("About logit-lens").open(&mut self.state.show_about).resizable(false).show(ctx, |ui| {
            ui.label(format!("logit-lens {}", env!("CARGO_PKG_VERSION")));
            ui.label("Decode every layer and sub-block of a GPT-2, GPT-Neo, CTRL, GPT-NeoX/Pythia or GPT-J model with its own final norm and unembedding (or through its last block first).");
            if let Some(m) = &self.state.model {
                ui.label(format!("ONNX Runtime {} · {}", m.runtime, m.provider));
            }
        });
    }

    fn lens_panels(&mut self, ui: &mut Ui) {
        // Side by side: every grid starts below the tallest header of the last frame.
        let tallest_header = self.geometry.iter().map(|g| g.header.height()).fold(0.0f32, f32::max);
        self.geometry.clear();
        let Some(vm) = self.view_model.as_ref() else {
            let text = if self.state.progress.is_some() { "Working…" } else { "No result yet: load a model and run a prompt (Ctrl+Enter)." };
            heatmap::empty_hint(ui, text);
            return;
        };
        let state = &self.state;
        let cmds = &mut self.cmds;
        let geometry = &mut self.geometry;
        let mut hovered = None;
        match state.view.layout {
            PanelLayout::Tabs => {
                ui.horizontal(|ui| {
                    let mut v = state.view.clone();
                    for m in Metric::ALL {
                        ui.selectable_value(&mut v.tab, m, RichText::new(m.title()).strong());
                    }
                    if v != state.view {
                        cmds.push(AppCommand::SetView(v));
                    }
                });
                if let Some(p) = vm.panel(state.view.tab) {
                    hovered = heatmap::grid_ui(ui, vm, p, state, cmds, geometry, heatmap::Placement::ALONE);
                }
            }
            PanelLayout::SideBySide | PanelLayout::Stacked => {
                // The panels drawn (shown and present in the view model), so that the stacked
                // layout's first and last panels carry the token strips.
                let shown: Vec<Metric> = Metric::ALL.iter().zip(state.view.shown).filter(|(m, s)| *s && vm.panel(**m).is_some()).map(|(m, _)| *m).collect();
                let n = shown.len().max(1);
                let avail = ui.available_rect_before_wrap();
                for (i, m) in shown.iter().enumerate() {
                    let rect = if state.view.layout == PanelLayout::SideBySide {
                        let w = avail.width() / n as f32;
                        egui::Rect::from_min_size(avail.min + egui::vec2(w * i as f32, 0.0), egui::vec2(w - 4.0, avail.height()))
                    } else {
                        let h = avail.height() / n as f32;
                        egui::Rect::from_min_size(avail.min + egui::vec2(0.0, h * i as f32), egui::vec2(avail.width(), h - 4.0))
                    };
                    let Some(p) = vm.panel(*m) else { continue };
                    let mut child = ui.new_child(egui::UiBuilder::new().max_rect(rect).id_salt(("panel", i)));
                    // Nothing a panel paints may reach its neighbours.
                    child.set_clip_rect(rect.intersect(ui.clip_rect()));
                    let place = if state.view.layout == PanelLayout::SideBySide {
                        heatmap::Placement { min_header_h: tallest_header, ..heatmap::Placement::ALONE }
                    } else {
                        heatmap::Placement { top_strip: i == 0, bottom_strip: i + 1 == n, min_header_h: 0.0 }
                    };
                    if let Some(h) = heatmap::grid_ui(&mut child, vm, p, state, cmds, geometry, place) {
                        hovered = Some(h);
                    }
                }
                ui.allocate_rect(avail, egui::Sense::hover());
            }
        }
        if hovered != state.hover {
            // Keep the hover while the pointer is over the inspector or contributions? No: the
            // grids own the hover; elsewhere it clears.
            cmds.push(AppCommand::Hover(hovered));
        }
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
            let busy = self.state.progress.is_some();
            prompt::prompt_ui(ui, &mut self.state.prompt, busy, &mut self.cmds);
            let mut pin_text = std::mem::take(&mut self.state.pin_text);
            ui.horizontal(|ui| {
                prompt::pin_ui(ui, &mut pin_text, &self.state, &mut self.cmds);
            });
            self.state.pin_text = pin_text;
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
            ctx.request_repaint();
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

impl eframe::App for LogitLensApp {
    fn ui(&mut self, ui: &mut Ui, _frame: &mut eframe::Frame) {
        self.show(ui);
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        if self.screenshot.is_none() {
            eframe::set_value(storage, eframe::APP_KEY, &self.state);
        }
    }
}
