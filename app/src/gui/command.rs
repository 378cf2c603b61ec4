//! [`AppCommand`]: what panels ask for. Panels read the state and push commands; the app applies
//! them in one place ([`super::app::LogitLensApp::apply`]).

use std::path::PathBuf;

use super::state::{Cell, ViewSettings};

/// Something the user asked for.
#[derive(Debug, Clone, PartialEq)]
pub enum AppCommand {
    /// Run the lens on the current prompt now.
    Run,
    /// The prompt text was edited (re-run after a pause).
    PromptEdited,
    /// Replace the prompt with a file's content (checked: UTF-8, size limit).
    OpenPromptFile(PathBuf),
    /// Open a model folder (a bundle, or an HF checkpoint converted on the way); with `--weights
    /// auto`, a checkpoint that would be quantized is asked about first.
    OpenModel(PathBuf),
    /// Open a model folder with these weights (the answer to that question).
    OpenModelAs(PathBuf, lens_model::build::quant::WeightsChoice),
    /// Close the weights question without opening anything.
    DismissWeightsAsk,
    /// Show the open-prompt dialog (the app opens it, never a panel or a test).
    RequestPromptDialog,
    /// Show the open-report dialog.
    RequestReportDialog,
    /// Show a report file (JSON) without a model: read on a thread, then [`AppCommand::ReportOpened`].
    OpenReport(PathBuf),
    /// A report file was read (or why not).
    ReportOpened(PathBuf, Result<crate::session::report_file::Opened, String>),
    /// Show the open-model dialog.
    RequestModelDialog,
    /// Cancel the jobs in flight.
    Cancel,
    /// Set (or clear) the hovered cell.
    Hover(Option<Cell>),
    /// Set (or clear) the selected cell.
    Select(Option<Cell>),
    /// Move the selection by (columns, rows) in display order (rows: +1 = down).
    MoveSelection(i32, i32),
    /// Pin a token given by its text (e.g. `" plasma"`); re-runs the lens.
    Pin(String),
    /// Follow a token group: a word (its single-token variants) or `TEXT|TEXT|…`; empty stops.
    Group(String),
    /// The group box's text changed (not applied until `Group`).
    SetGroupText(String),
    /// Ask for a text file and run corpus mode over it.
    RequestCorpusDialog,
    /// Run corpus mode over this text file (the current model and decoder).
    RunCorpus(std::path::PathBuf),
    /// Compute gradient × activation for the shown result (the contributions panel shows it).
    ComputeGradXAct,
    /// Forget the corpus runs shown.
    ClearCorpus,
    /// The statistic the Corpus window plots.
    SetCorpusMetric(String),
    /// Ask for a tuned lens folder to open.
    RequestTunedLensDialog,
    /// Open a tuned lens folder and decode with it.
    OpenTunedLens(PathBuf),
    /// Ask for a J-lens file to open.
    RequestJacobianLensDialog,
    /// Open a J-lens file (or `published`: fetch the one published for the open model) and
    /// decode with it.
    OpenJacobianLens(PathBuf),
    /// Ask for the Fit window's training text file.
    RequestFitTextDialog,
    /// Ask for the Fit window's output folder.
    RequestFitOutDialog,
    /// Replace the Fit window's settings.
    SetFit(super::state::FitSettings),
    /// Ask for the Fit J-lens window's prompts file.
    RequestJfitPromptsDialog,
    /// Ask for the Fit J-lens window's lens file.
    RequestJfitOutDialog,
    /// Replace the Fit J-lens window's settings.
    SetJfit(super::state::JfitSettings),
    /// Fit a J-lens with the Fit J-lens window's settings (`resume`: from its checkpoint).
    StartJfit {
        /// Continue the checkpoint beside the lens file.
        resume: bool,
    },
    /// Replace the Activation patching window's settings.
    SetPatch(super::state::PatchSettings),
    /// Sweep the patching window's sites (progress and Cancel in the status bar).
    StartPatch,
    /// Replace the steering settings (re-runs the lens when what the runs use changes).
    SetSteer(super::state::SteerSettings),
    /// Replace the Open remote model window's settings.
    SetRemote(super::state::RemoteSettings),
    /// Run the lens of the prompt through nnsight (File → Open remote model…), on a thread.
    RunRemote,
    /// Stop the nnsight run (its Python process is killed).
    CancelRemote,
    /// A status line of the nnsight run.
    RemoteStatus(String),
    /// The nnsight run's report, shown without its model (the model id), or why it failed.
    RemoteDone(String, Result<crate::session::report_file::Opened, String>),
    /// Greedy continuations of the prompt, steered and not.
    Generate(usize),
    /// Fit a tuned lens with the Fit window's settings (`resume`: from its output's checkpoint).
    StartFit {
        /// Continue the checkpoint in the output folder.
        resume: bool,
    },
    /// Compare the run with another decoder or prompt (`None`: stop comparing); re-runs the lens.
    SetCompare(Option<crate::session::worker::CompareWith>),
    /// Ask for a model folder to compare with.
    RequestCompareModelDialog,
    /// The compare-with-prompt box's text changed (not applied until `SetCompare`).
    SetCompareText(String),
    /// Pin a token id; re-runs the lens.
    PinId(u32),
    /// Clear the pin.
    Unpin,
    /// Replace the view settings.
    SetView(ViewSettings),
    /// Set the shared scroll offset of the grids.
    Scroll(egui::Vec2),
    /// Dismiss the error banner.
    DismissError,
    /// Show the Export figure window (Ctrl+E).
    ShowExport,
    /// Show one of the app's other windows.
    ShowWindow(Window),
    /// Ask where to save the figure (file dialog).
    RequestExportFigureDialog,
    /// Write the figure of the current view to this file (.svg, .pdf or .png).
    ExportFigure(PathBuf),
    /// Ask where to save the data (file dialog).
    RequestExportDataDialog,
    /// Write the report to this file (.json or .csv).
    ExportData(PathBuf),
    /// Quit the app.
    Quit,
}

/// The app's windows besides Export figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// File → Open Hugging Face model….
    OpenHubId,
    /// Help → Keyboard shortcuts.
    Shortcuts,
    /// Help → About.
    About,
    /// View → Corpus….
    Corpus,
    /// File → Fit tuned lens….
    FitLens,
    /// File → Fit J-lens….
    FitJlens,
    /// View → Activation patching….
    Patch,
    /// File → Open remote model….
    Remote,
    /// View → Steering….
    Steer,
}
