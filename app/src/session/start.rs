//! What a face asks of the desktop app: open the window with these options, or time its frames.
//! The CLI builds a [`GuiRequest`] from the command line and hands it to whatever the binary
//! passes in (`gui::serve`), so the CLI never imports the GUI.

use std::path::PathBuf;

use clap::Args;
use lens_model::run::runtime::Device;

/// Start-up options (from the command line).
#[derive(Debug, Clone, Default)]
pub struct GuiOptions {
    /// Model folder (overrides the remembered one).
    pub model: Option<PathBuf>,
    /// Prompt text (overrides the remembered one).
    pub prompt: Option<String>,
    /// Prompt file (overrides the remembered prompt).
    pub prompt_file: Option<PathBuf>,
    /// Save a screenshot here once the first result is on screen, then exit.
    pub screenshot: Option<PathBuf>,
    /// Execution provider.
    pub device: Device,
    /// ONNX Runtime library.
    pub ort_lib: Option<PathBuf>,
    /// Positions per partial result (default: by the model's size, see
    /// [`crate::session::worker::positions_per_piece`]; tests set a small number).
    pub piece_positions: Option<usize>,
    /// Decoder to start with (overrides the remembered one).
    pub decoder: Option<lens_model::lens::kernel::DecoderKind>,
    /// Start with the sub-block rows shown.
    pub subblocks: bool,
    /// A tuned lens folder to open with the model.
    pub tuned_lens: Option<PathBuf>,
    /// A J-lens file to open with the model (`published`: the one published for it).
    pub jacobian_lens: Option<PathBuf>,
    /// Initial window size in points (default 1500 x 940).
    pub window_size: Option<[f32; 2]>,
    /// The panels' layout to start with (`tabs`, `side-by-side` or `stacked`; overrides the
    /// remembered one).
    pub layout: Option<String>,
    /// A report (`lens --json`, the app's JSON export) to show without any model
    /// (`--open-report`); nothing is loaded.
    pub open_report: Option<PathBuf>,
    /// Weight format of the models opened (`--weights`; `auto` by the memory available).
    pub weights: lens_model::build::quant::WeightsChoice,
}

/// Options of `bench-ui`.
#[derive(Args, Debug)]
pub struct BenchUiArgs {
    /// Layers (97 rows with sub-blocks for 48).
    #[arg(long, default_value_t = 48)]
    pub layers: usize,
    /// Positions.
    #[arg(long, default_value_t = 512)]
    pub positions: usize,
    /// Frames to time.
    #[arg(long, default_value_t = 200)]
    pub frames: usize,
    /// Window width and height in points.
    #[arg(long, default_value_t = 1500.0)]
    pub width: f32,
    /// Window height in points.
    #[arg(long, default_value_t = 940.0)]
    pub height: f32,
}

/// A request for the desktop app.
#[derive(Debug)]
pub enum GuiRequest {
    /// Open the window.
    Window(Box<GuiOptions>),
    /// `logit-lens bench-ui`: frame times of the window over a synthetic result, headless.
    BenchUi(BenchUiArgs),
}
