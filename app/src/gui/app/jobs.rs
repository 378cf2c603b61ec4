//! The app's jobs: the worker thread, loading a model, running the lens, opening prompt files,
//! and polling outcomes (applied by [`crate::gui::outcome::apply_outcome`]).

#[allow(clippy::wildcard_imports)]
use super::*;

impl LogitLensApp {
    pub(super) fn worker(&mut self) -> Option<&mut Worker> {
        if self.worker.is_none() {
            let ctx = self.ctx.clone()?;
            let cost = Arc::clone(&self.frame_cost_us);
            let repaint: crate::session::worker::Repaint = Arc::new(move |after: Option<std::time::Duration>| match after {
                None => ctx.request_repaint(),
                Some(d) => {
                    let frame = std::time::Duration::from_micros(cost.load(std::sync::atomic::Ordering::Relaxed));
                    ctx.request_repaint_after(d.max(frame * PROGRESS_FRAME_FACTOR));
                }
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

    pub(super) fn load(&mut self, path: Option<PathBuf>) {
        self.load_as(path, self.opts.weights);
    }

    /// [`Self::load`] with the weights given (the answer to the weights question).
    pub(super) fn load_as(&mut self, path: Option<PathBuf>, weights: lens_model::build::quant::WeightsChoice) {
        // A report shown without its model gives way to a real model (its summary was the
        // report's).
        if self.state.report_file.take().is_some() {
            self.state.model = None;
        }
        let (device, ort_lib) = (self.opts.device, self.opts.ort_lib.clone());
        let Some(w) = self.worker() else { return };
        let id = w.submit(JobKind::Load { model: path.clone(), device, ort_lib, weights });
        self.latest_load = id;
        self.loading_path = Some((id, path));
        self.run_after_load = true;
    }

    /// Gradient × activation of the shown result, through the model's backward graph; its
    /// result replaces the shown one (a newer run supersedes it).
    pub(super) fn compute_grad_x_act(&mut self) {
        if self.refused_without_model() {
            return;
        }
        let Some(res) = self.state.result.clone() else {
            self.state.error = Some("run the lens first: gradient × activation is computed for the shown result".into());
            return;
        };
        if let Some(w) = self.worker() {
            self.latest_run = w.submit(JobKind::GradXAct(res));
        }
    }

    /// Runs corpus mode over `file` with the current model and decoder (progress and Cancel in
    /// the status bar; the result joins the Corpus window's runs).
    pub(super) fn run_corpus(&mut self, file: PathBuf) {
        if self.refused_without_model() {
            return;
        }
        if self.state.model.is_none() {
            self.state.error = Some("no model is loaded: open one first".into());
            return;
        }
        let job = JobKind::Corpus { file, window: None, decoder: self.state.view.decoder };
        if let Some(w) = self.worker() {
            self.latest_corpus = w.submit(job);
        }
    }

    /// Greedy continuations of the prompt, steered (the Steering window's vector) and not.
    pub(super) fn generate(&mut self, n: usize) {
        if self.refused_without_model() {
            return;
        }
        let Some(steer) = self.state.steer.spec() else {
            self.state.error = Some("give the steering vector: two prompts (A − B) or a .npy file".into());
            return;
        };
        if self.state.model.is_none() || self.state.prompt.is_empty() {
            self.state.error = Some("needs a model and a prompt".into());
            return;
        }
        let job = JobKind::Generate { text: self.state.prompt.clone(), steer, n };
        if let Some(w) = self.worker() {
            self.latest_patch = w.submit(job);
        }
    }

    /// Sweeps the Activation patching window's sites: the app's prompt (clean) into its corrupted
    /// prompt (progress and Cancel in the status bar; the heatmap in the window).
    pub(super) fn start_patch(&mut self) {
        if self.refused_without_model() {
            return;
        }
        let s = self.state.patch.clone();
        let why = if self.state.model.is_none() {
            Some("no model is loaded: open one first")
        } else if self.state.prompt.is_empty() {
            Some("the prompt (the clean run) is empty")
        } else if s.corrupt.is_empty() {
            Some("the corrupted prompt is empty")
        } else if s.target.is_empty() {
            Some("give the target token (e.g. \" Paris\")")
        } else {
            None
        };
        if let Some(why) = why {
            self.state.error = Some(why.into());
            return;
        }
        let job = JobKind::PatchSweep {
            clean: self.state.prompt.clone(),
            corrupt: s.corrupt,
            target: s.target,
            against: s.against,
            kind: s.kind,
            estimate: s.estimate,
        };
        if let Some(w) = self.worker() {
            self.latest_patch = w.submit(job);
        }
    }

    /// Opens a tuned lens folder on the worker (checked against the model there).
    pub(super) fn open_tuned_lens(&mut self, dir: PathBuf) {
        if self.refused_without_model() {
            return;
        }
        if self.state.model.is_none() && self.loading_path.is_none() {
            self.state.error = Some("no model is loaded: open a model before its tuned lens".into());
            return;
        }
        if let Some(w) = self.worker() {
            self.latest_lens = w.submit(JobKind::OpenTunedLens(dir));
        }
    }

    /// Opens a J-lens file (or fetches the published one of the open model) on the worker,
    /// checked against the model there.
    pub(super) fn open_jacobian_lens(&mut self, file: PathBuf) {
        if self.refused_without_model() {
            return;
        }
        if self.state.model.is_none() && self.loading_path.is_none() {
            self.state.error = Some("no model is loaded: open a model before its J-lens".into());
            return;
        }
        let model = self.state.model_path.clone();
        if let Some(w) = self.worker() {
            self.latest_lens = w.submit(JobKind::OpenJacobianLens { file, model });
        }
    }

    /// Fits a tuned lens with the Fit window's settings (progress, loss per step, Cancel).
    pub(super) fn start_fit(&mut self, resume: bool) {
        if self.refused_without_model() {
            return;
        }
        let f = self.state.fit.clone();
        let (Some(text), Some(out)) = (f.text, f.out) else {
            self.state.error = Some("choose a training text file and an output folder first".into());
            return;
        };
        if self.state.model.is_none() {
            self.state.error = Some("no model is loaded: open one first".into());
            return;
        }
        // The window's guard, again where every fit starts: a lens already there is replaced only
        // when the user ticked "Replace" (a resumed fit writes where it checkpointed).
        if !resume && !f.replace && lens_model::lens::tuned_lens::fit::holds_lens(&out) {
            self.state.error =
                Some(format!("{} already holds a tuned lens: tick \"Replace the lens already in this folder\", or choose another folder", out.display()));
            return;
        }
        if !resume {
            self.state.fit_history.clear();
        }
        let opts = lens_model::lens::tuned_lens::fit::FitOptions { steps: f.steps.max(1), tokens_per_step: f.tokens.max(1), ..Default::default() };
        let job = JobKind::FitLens { texts: vec![text], out, opts, resume };
        if let Some(w) = self.worker() {
            self.latest_lens = w.submit(job);
        }
    }

    /// Fits a J-lens with the Fit J-lens window's settings (progress per prompt, Cancel keeps a
    /// checkpoint to resume).
    pub(super) fn start_jfit(&mut self, resume: bool) {
        if self.refused_without_model() {
            return;
        }
        let f = self.state.jfit.clone();
        let (Some(prompts), Some(out)) = (f.prompts.clone(), f.out.clone()) else {
            self.state.error = Some("choose a prompts file and the lens file to write first".into());
            return;
        };
        if self.state.model.is_none() {
            self.state.error = Some("no model is loaded: open one first".into());
            return;
        }
        // The CLI's guards: a file already there is replaced only when the user ticked
        // "Replace"; a resumed fit needs its checkpoint.
        if !resume && !f.replace && out.exists() {
            self.state.error = Some(format!("{} exists: tick \"Replace the file already there\", or choose another file", out.display()));
            return;
        }
        if resume && !lens_model::analyses::jlens_fit::checkpoint_path(&out).is_file() {
            self.state.error = Some(format!("there is no checkpoint of an unfinished fit beside {} to resume", out.display()));
            return;
        }
        let layers = match f.layer_list() {
            Ok(l) => l,
            Err(e) => {
                self.state.error = Some(e);
                return;
            }
        };
        let opts = lens_model::analyses::jlens_fit::JlensFitOptions {
            max_seq_len: f.max_seq_len.max(1),
            skip_first: f.skip_first,
            layers,
            dim_batch: f.dim_batch.max(1),
            half: !f.f32,
            // As the CLI records it: a fit started in one can be resumed in the other.
            corpus: prompts.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
            resume,
            ..lens_model::analyses::jlens_fit::JlensFitOptions::default()
        };
        self.state.jfit_progress = None;
        self.state.jfit_done = None;
        if let Some(w) = self.worker() {
            self.latest_lens = w.submit(JobKind::FitJlens { prompts, out, opts });
        }
    }

    pub(super) fn run(&mut self) {
        self.edited_at = None;
        if self.refused_without_model() {
            return;
        }
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
            group: self.state.group.clone(),
            k: self.state.view.top_k,
            decoder: self.state.view.decoder,
            truncate_left: self.state.view.truncate_left,
            compare: self.state.compare.clone(),
            steer: self.state.steer.active(),
        };
        if let Some(w) = self.worker() {
            self.latest_run = w.submit(job);
        }
    }

    pub(super) fn open_prompt_file(&mut self, path: PathBuf, run: bool) {
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

    pub(super) fn poll_worker(&mut self) {
        // Dialog answers and opened reports (these need no worker).
        while let Ok(cmd) = self.dialog_rx.try_recv() {
            self.cmds.push(cmd);
        }
        let Some(w) = self.worker.as_mut() else { return };
        let outcomes = w.poll();
        self.state.progress = w.progress();
        for o in outcomes {
            let latest = if o.was_load {
                self.latest_load
            } else if o.id == self.latest_corpus {
                self.latest_corpus
            } else if o.id == self.latest_lens {
                self.latest_lens
            } else if o.id == self.latest_patch {
                self.latest_patch
            } else {
                self.latest_run
            };
            if o.id != latest {
                continue; // stale
            }
            let loaded = matches!(o.kind, crate::session::worker::OutcomeKind::Loaded(_));
            let lens_after_load = if loaded { self.lens_after_load.take() } else { None };
            let mut book = JobBook {
                loading: self.loading_path.take(),
                run_after_load: self.run_after_load,
                partials_shown: self.partials_shown,
                lens_after_load: lens_after_load.is_some(),
                lens_job: o.id == self.latest_lens && !o.was_load,
            };
            let effects = apply_outcome(&mut self.state, &mut book, o.was_load, o.kind);
            // `--tuned-lens`, `--jacobian-lens`: opened before the first run (the worker takes
            // jobs in order).
            match lens_after_load {
                Some(super::LensToOpen::Tuned(dir)) => self.open_tuned_lens(dir),
                Some(super::LensToOpen::Jacobian(file)) => self.open_jacobian_lens(file),
                None => {}
            }
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
    }
}
