//! Commands: the one place where the state changes on user request ([`LogitLensApp::apply`]),
//! with the dialogs and exports they ask for and the selection's movement.

#[allow(clippy::wildcard_imports)]
use super::*;

impl LogitLensApp {
    pub(super) fn vocab_find(&self, typed: &str) -> Option<u32> {
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
        // A report shown without its model: a command that changes a run setting and then runs
        // is refused (with a note) before the setting changes. Running itself (Run, an edit,
        // corpus mode, a tuned lens or J-lens, a fit) is refused where every path to it goes:
        // `run`, `run_corpus`, `open_tuned_lens`, `open_jacobian_lens`, `start_fit`.
        let needs_model = match &cmd {
            AppCommand::Pin(_) | AppCommand::PinId(_) | AppCommand::Unpin | AppCommand::Group(_) | AppCommand::SetCompare(_) => true,
            AppCommand::SetView(v) => self.state.view.run_differs(v),
            _ => false,
        };
        if needs_model && self.refused_without_model() {
            return;
        }
        match cmd {
            AppCommand::Run => self.run(),
            AppCommand::PromptEdited => self.edited_at = Some(self.now()),
            AppCommand::OpenPromptFile(p) => self.open_prompt_file(p, true),
            AppCommand::OpenModel(p) => {
                if p.is_dir() || lens_model::run::resolve::names_hub_id(&p) {
                    self.state.show_open_id = false;
                    // A checkpoint that auto would quantize: ask first (reads config.json only).
                    if self.opts.weights == WeightsChoice::Auto
                        && lens_model::build::convert::is_hf_checkpoint(&p)
                        && !p.join(lens_model::build::convert::MODEL_FILE).is_file()
                        && let Ok((format, Some(reason))) = lens_model::run::resolve::choose_weights(&p, WeightsChoice::Auto)
                        && !format.is_exact()
                    {
                        self.state.ask_weights = Some(crate::gui::state::WeightsAsk { path: p, format, reason });
                        return;
                    }
                    self.load(Some(p));
                } else {
                    self.state.error = Some(format!(
                        "{} is not a folder or a Hugging Face id (org/name): open a lens bundle folder, a Hugging Face checkpoint folder or an id",
                        p.display()
                    ));
                }
            }
            AppCommand::OpenModelAs(p, weights) => {
                self.state.ask_weights = None;
                self.load_as(Some(p), weights);
            }
            AppCommand::DismissWeightsAsk => self.state.ask_weights = None,
            AppCommand::RequestPromptDialog => self.open_dialog(DialogKind::Prompt),
            AppCommand::RequestModelDialog => self.open_dialog(DialogKind::Model),
            AppCommand::RequestReportDialog => self.open_dialog(DialogKind::Report),
            AppCommand::OpenReport(p) => self.open_report(p),
            AppCommand::ReportOpened(p, opened) => self.report_opened(p, opened),
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
            AppCommand::SetGroupText(text) => self.state.group_text = text,
            AppCommand::Group(text) => {
                let text = text.trim_end_matches(['\n', '\r']).to_string();
                let group = (!text.trim().is_empty()).then_some(text);
                if group != self.state.group {
                    if group.is_none() && self.state.view.logit_color == crate::gui::state::LogitColor::Group {
                        self.state.view.logit_color = crate::gui::state::LogitColor::Probability;
                    }
                    self.state.group = group;
                    self.run();
                }
            }
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
            AppCommand::DismissError => {
                self.state.error = None;
                self.state.error_sticky = false;
            }
            AppCommand::ShowExport => self.state.show_export = true,
            AppCommand::ShowWindow(w) => match w {
                Window::OpenHubId => self.state.show_open_id = true,
                Window::Shortcuts => self.state.show_shortcuts = true,
                Window::About => self.state.show_about = true,
                Window::Corpus => self.state.show_corpus = true,
                Window::FitLens => self.state.show_fit = true,
                Window::FitJlens => self.state.show_jfit = true,
                Window::Patch => self.state.show_patch = true,
                Window::Remote => self.state.show_remote = true,
                Window::Steer => self.state.show_steer = true,
            },
            AppCommand::RequestCorpusDialog => self.open_dialog(DialogKind::CorpusText),
            AppCommand::RequestTunedLensDialog => self.open_dialog(DialogKind::TunedLens),
            AppCommand::OpenTunedLens(dir) => self.open_tuned_lens(dir),
            AppCommand::RequestJacobianLensDialog => self.open_dialog(DialogKind::JacobianLens),
            AppCommand::OpenJacobianLens(file) => self.open_jacobian_lens(file),
            AppCommand::RequestFitTextDialog => self.open_dialog(DialogKind::FitText),
            AppCommand::RequestFitOutDialog => self.open_dialog(DialogKind::FitOut),
            AppCommand::SetFit(f) => self.state.fit = f,
            AppCommand::RequestJfitPromptsDialog => self.open_dialog(DialogKind::JfitPrompts),
            AppCommand::RequestJfitOutDialog => self.open_dialog(DialogKind::JfitOut),
            AppCommand::SetJfit(f) => self.state.jfit = f,
            AppCommand::StartJfit { resume } => self.start_jfit(resume),
            AppCommand::SetCompare(c) => {
                if c != self.state.compare {
                    self.state.compare = c;
                    self.run();
                }
            }
            AppCommand::SetCompareText(t) => self.state.compare_text = t,
            AppCommand::RequestCompareModelDialog => self.open_dialog(DialogKind::CompareModel),
            AppCommand::StartFit { resume } => self.start_fit(resume),
            AppCommand::RunCorpus(file) => self.run_corpus(file),
            AppCommand::ComputeGradXAct => self.compute_grad_x_act(),
            AppCommand::ClearCorpus => self.state.corpus_runs.clear(),
            AppCommand::SetPatch(s) => self.state.patch = s,
            AppCommand::StartPatch => self.start_patch(),
            AppCommand::SetSteer(s) => {
                let rerun = s.active() != self.state.steer.active();
                self.state.steer = s;
                if rerun && self.state.model.is_some() && !self.state.prompt.is_empty() {
                    self.run();
                }
            }
            AppCommand::Generate(n) => self.generate(n),
            AppCommand::SetRemote(s) => self.state.remote = s,
            AppCommand::RunRemote => self.run_remote(),
            AppCommand::CancelRemote => {
                if let Some((p, _)) = &self.state.remote_running {
                    p.cancel();
                }
            }
            AppCommand::RemoteStatus(line) => {
                if let Some((_, status)) = self.state.remote_running.as_mut() {
                    *status = line;
                }
            }
            AppCommand::RemoteDone(model, opened) => {
                let cancelled = self.state.remote_running.take().is_some_and(|(p, _)| p.is_cancelled());
                match opened {
                    Err(_) if cancelled => self.state.notice = Some("the nnsight run was cancelled".into()),
                    Err(e) => self.state.error = Some(e),
                    Ok(o) => {
                        self.state.show_remote = false;
                        self.report_opened(std::path::PathBuf::from(format!("nnsight:{model}")), Ok(o));
                    }
                }
            }
            AppCommand::SetCorpusMetric(m) => self.state.corpus_metric = m,
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
    pub(super) fn export_figure(&mut self, path: &std::path::Path) {
        self.refresh_view_model();
        let (Some(vm), Some(res)) = (self.view_model.as_ref(), self.state.result.as_ref()) else {
            self.state.error = Some("nothing to export yet: run the lens first".into());
            return;
        };
        let app = crate::figure::export::AppView {
            vm,
            result: res,
            view: &self.state.view,
            model: self.state.model.as_deref(),
            pin_text: self.state.pinned.map(|_| self.state.pin_text.clone()),
            compare: self.state.compare.as_ref(),
        };
        match crate::figure::export::figure_from_app(&app, &self.state.export, path) {
            Ok(()) => {
                self.state.notice = Some(format!("exported {}", path.display()));
                self.state.error = None;
            }
            Err(e) => self.state.error = Some(format!("export failed: {e:#}")),
        }
    }

    /// Writes the report as JSON or as a CSV table (by extension).
    pub(super) fn export_data(&mut self, path: &std::path::Path) {
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

    /// Reads a result file on a thread (it can be large); [`AppCommand::ReportOpened`] brings it.
    pub(super) fn open_report(&mut self, path: PathBuf) {
        let tx = self.dialog_tx.clone();
        let ctx = self.ctx.clone();
        let spawned = std::thread::Builder::new().name("open-report".into()).spawn(move || {
            let opened = crate::session::report_file::read(&path).map_err(|e| format!("{e:#}"));
            let _ = tx.send(AppCommand::ReportOpened(path, opened));
            if let Some(ctx) = ctx {
                ctx.request_repaint();
            }
        });
        if let Err(e) = spawned {
            self.state.error = Some(format!("cannot read the report: {e}"));
        }
    }

    /// Shows a result file read by [`Self::open_report`]: a lens report (or a comparison) replaces
    /// the model and the result on screen, with editing and running off; a corpus report joins the
    /// Corpus window.
    pub(super) fn report_opened(&mut self, path: PathBuf, opened: Result<crate::session::report_file::Opened, String>) {
        use crate::session::report_file::Opened;
        match opened {
            Err(e) => self.state.error = Some(e),
            Ok(Opened::Corpus(run)) => {
                self.state.notice = Some(format!("opened the corpus report {}", path.display()));
                self.state.error = None;
                self.state.show_corpus = true;
                self.state.corpus_runs.push(run);
                let extra = self.state.corpus_runs.len().saturating_sub(crate::gui::state::MAX_CORPUS_RUNS);
                self.state.corpus_runs.drain(..extra);
            }
            Ok(Opened::Lens(result)) => {
                if let Some(w) = &self.worker {
                    w.cancel_all();
                }
                // The jobs in flight are forgotten: none of their outcomes replaces this.
                self.latest_run = u64::MAX;
                self.latest_load = u64::MAX;
                self.loading_path = None;
                self.run_after_load = false;
                self.edited_at = None;
                let report = &result.report;
                if let Some(d) = lens_model::lens::kernel::DecoderKind::parse(&report.decoder) {
                    self.state.view.decoder = d;
                }
                self.state.model = Some(Arc::new(ModelSummary::from_report(report)));
                self.state.prompt.clone_from(&result.prompt);
                // The comparison the file holds is what the Compare box shows (and what an export
                // records).
                self.state.compare = result.compare.as_deref().and_then(crate::session::compare::CompareWith::of_report);
                self.state.selection = None;
                self.state.hover = None;
                self.state.progress = None;
                self.state.error = None;
                self.state.notice = Some(format!(
                    "{}: a report shown without its model: editing and re-running are off (File → Open model… runs the lens again)",
                    path.display()
                ));
                self.state.result = Some(result);
                self.state.report_file = Some(path);
            }
        }
    }

    /// Runs the lens of the prompt through nnsight on a thread (File → Open remote model…): the
    /// window shows its status and Cancel; the report is shown without its model.
    pub(super) fn run_remote(&mut self) {
        if self.state.remote_running.is_some() {
            return;
        }
        let settings = self.state.remote.clone();
        let model = settings.model.trim().to_string();
        let text = self.state.prompt.clone();
        // The view's "Sub-block rows" choice: the report has those rows or not.
        let subblocks = self.state.view.subblocks;
        if model.is_empty() || text.is_empty() {
            self.state.error = Some("the nnsight run needs a model (folder or hub id) and a prompt".into());
            return;
        }
        let tx = self.dialog_tx.clone();
        let ctx = self.ctx.clone();
        let (status_tx, status_ctx) = (tx.clone(), ctx.clone());
        let progress = lens_model::error::Progress::new(move |stage, _| {
            let _ = status_tx.send(AppCommand::RemoteStatus(stage.to_string()));
            if let Some(c) = &status_ctx {
                c.request_repaint();
            }
        });
        self.state.remote_running = Some((progress.clone(), "starting".into()));
        self.state.error = None;
        let spawned = std::thread::Builder::new().name("nnsight".into()).spawn(move || {
            let python = Some(settings.python.trim()).filter(|p| !p.is_empty()).map(std::path::PathBuf::from);
            let run = || -> anyhow::Result<crate::session::report_file::Opened> {
                let tokenizer = crate::session::remote::tokenizer_of(&model, &progress)?;
                let ids = tokenizer.encode(&text)?;
                let opts = lens_model::LensOptions { subblocks, ..lens_model::LensOptions::default() };
                let report = crate::session::remote::run_remote(&model, settings.ndif, python.as_deref(), &tokenizer, &ids, &opts, &progress)?;
                Ok(crate::session::report_file::Opened::Lens(crate::session::report_file::result_of(report)))
            };
            let opened = run().map_err(|e| format!("{e:#}"));
            let _ = tx.send(AppCommand::RemoteDone(model, opened));
            if let Some(ctx) = ctx {
                ctx.request_repaint();
            }
        });
        if let Err(e) = spawned {
            self.state.remote_running = None;
            self.state.error = Some(format!("cannot start the nnsight run: {e}"));
        }
    }

    /// Refuses what needs the model while a report is shown without it (and says why).
    pub(super) fn refused_without_model(&mut self) -> bool {
        let Some(f) = &self.state.report_file else { return false };
        self.state.notice =
            Some(format!("this result was opened from {} without its model: open a model (File → Open model…) to run the lens again", f.display()));
        true
    }

    pub(super) fn open_dialog(&mut self, kind: DialogKind) {
        self.last_dialog_request = Some(kind);
        if !self.dialogs_enabled {
            return;
        }
        let tx = self.dialog_tx.clone();
        let ctx = self.ctx.clone();
        let export_ext = self.state.export.format.clone();
        let fit = self.state.fit.clone();
        let jfit = self.state.jfit.clone();
        // rfd blocks until the user answers: never on the UI thread.
        let spawned = std::thread::Builder::new().name("file-dialog".into()).spawn(move || {
            let cmd = match kind {
                DialogKind::CorpusText => rfd::FileDialog::new()
                    .set_title("Corpus: a text file to run the lens over")
                    .add_filter("Text", &["txt", "md", "text"])
                    .add_filter("All files", &["*"])
                    .pick_file()
                    .map(AppCommand::RunCorpus),
                DialogKind::CompareModel => rfd::FileDialog::new()
                    .set_title("Compare with the model in this folder (same tokenizer and depth)")
                    .pick_folder()
                    .map(|p| AppCommand::SetCompare(Some(crate::session::worker::CompareWith::Model(p)))),
                DialogKind::JacobianLens => rfd::FileDialog::new()
                    .set_title("Open J-lens (a .pt file: TransformerLens JacobianLens.save, or a published one)")
                    .add_filter("J-lens", &["pt", "pth"])
                    .add_filter("All files", &["*"])
                    .pick_file()
                    .map(AppCommand::OpenJacobianLens),
                DialogKind::TunedLens => {
                    rfd::FileDialog::new().set_title("Open tuned lens (a folder with config.json and params.pt)").pick_folder().map(AppCommand::OpenTunedLens)
                }
                DialogKind::FitText => rfd::FileDialog::new()
                    .set_title("Fit tuned lens: training text")
                    .add_filter("Text", &["txt", "md", "text"])
                    .add_filter("All files", &["*"])
                    .pick_file()
                    .map(|p| AppCommand::SetFit(crate::gui::state::FitSettings { text: Some(p), ..fit.clone() })),
                DialogKind::FitOut => rfd::FileDialog::new()
                    .set_title("Fit tuned lens: the lens folder to write")
                    .pick_folder()
                    .map(|p| AppCommand::SetFit(crate::gui::state::FitSettings { out: Some(p), replace: false, ..fit.clone() })),
                DialogKind::JfitPrompts => rfd::FileDialog::new()
                    .set_title("Fit J-lens: prompts, one per line")
                    .add_filter("Text", &["txt", "md", "text"])
                    .add_filter("All files", &["*"])
                    .pick_file()
                    .map(|p| AppCommand::SetJfit(crate::gui::state::JfitSettings { prompts: Some(p), ..jfit.clone() })),
                DialogKind::JfitOut => rfd::FileDialog::new()
                    .set_title("Fit J-lens: the lens file to write")
                    .set_file_name("jacobian_lens.pt")
                    .add_filter("J-lens", &["pt"])
                    .save_file()
                    .map(|p| AppCommand::SetJfit(crate::gui::state::JfitSettings { out: Some(p), replace: false, ..jfit.clone() })),
                DialogKind::Prompt => rfd::FileDialog::new()
                    .set_title("Open prompt")
                    .add_filter("Text", &["txt", "md", "text"])
                    .add_filter("All files", &["*"])
                    .pick_file()
                    .map(AppCommand::OpenPromptFile),
                DialogKind::Report => rfd::FileDialog::new()
                    .set_title("Open report (lens, comparison or corpus JSON), without its model")
                    .add_filter("logit-lens report", &["json"])
                    .pick_file()
                    .map(AppCommand::OpenReport),
                DialogKind::Model => {
                    rfd::FileDialog::new().set_title("Open model folder (lens bundle or Hugging Face checkpoint)").pick_folder().map(AppCommand::OpenModel)
                }
                DialogKind::ExportFigure => rfd::FileDialog::new()
                    .set_title("Export figure")
                    .set_file_name(format!("logit-lens.{export_ext}"))
                    .add_filter("Figure", &["pdf", "svg", "png", "html"])
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

    pub(super) fn move_selection(&mut self, dc: i32, dr: i32) {
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
    pub(super) fn ensure_selection_visible(&mut self) {
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
}
