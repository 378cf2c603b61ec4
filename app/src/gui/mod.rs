//! The desktop app (egui/eframe): synchronized logit / rank / KL / entropy grids, an inspector
//! with trajectories over depth, sub-block contributions, pinned tokens. The UI thread never
//! blocks: one worker thread owns the engine.

pub mod app;
pub mod bench_ui;
pub mod command;
pub mod fonts;
pub mod outcome;
pub mod panels;
pub mod state;

use anyhow::{Result, anyhow, bail};

/// The view layer's modules under the names the app's code uses.
pub use crate::view::{model as view, theme};
pub use app::{GuiOptions, LogitLensApp};

/// Serves a face's request: the window, or the frame-time benchmark.
pub fn serve(request: crate::session::start::GuiRequest) -> Result<()> {
    match request {
        crate::session::start::GuiRequest::Window(opts) => run(*opts),
        crate::session::start::GuiRequest::BenchUi(args) => bench_ui::run(&args),
    }
}

/// Opens the window and runs until it closes.
pub fn run(opts: GuiOptions) -> Result<()> {
    let screenshot = opts.screenshot.is_some();
    let native = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("logit-lens")
            .with_inner_size(opts.window_size.unwrap_or([1500.0, 940.0]))
            .with_min_inner_size([800.0, 500.0])
            .with_drag_and_drop(true),
        persist_window: !screenshot,
        ..Default::default()
    };
    let outcome = std::sync::Arc::new(std::sync::Mutex::new(None));
    let slot = std::sync::Arc::clone(&outcome);
    eframe::run_native(
        "logit-lens",
        native,
        Box::new(move |cc| {
            let app = LogitLensApp::new(cc, opts);
            if let Ok(mut s) = slot.lock() {
                *s = app.screenshot_outcome();
            }
            Ok(Box::new(app))
        }),
    )
    .map_err(|e| anyhow!("the window could not be opened: {e}"))?;
    if screenshot {
        let shot = outcome.lock().ok().and_then(|g| g.clone());
        let Some(shot) = shot else { bail!("no screenshot was taken") };
        let o = shot.lock().map_err(|_| anyhow!("screenshot state poisoned"))?;
        match &o.saved {
            Some(Ok(p)) => eprintln!("saved screenshot {}", p.display()),
            Some(Err(e)) => bail!("{e}"),
            None => bail!("the window closed before the screenshot was taken"),
        }
        if let Some(e) = &o.app_error {
            bail!("the app showed an error: {e}");
        }
    }
    Ok(())
}
