//! The layer under every face (gui, figure, cli): no egui, no face imports it back. What a run
//! needs besides the engine: opening it ([`engine`]), the one run path of a prompt ([`run`]), the one rule for a comparison's run B
//! ([`compare`]); prompt files and output paths ([`prompt`]), the worker protocol
//! ([`worker`]: jobs with ids, progress, a cancel that reaches ONNX Runtime, partial results),
//! token groups from typed text ([`groups`]), result files opened without a model
//! ([`report_file`]).

pub mod compare;
pub mod engine;
pub mod groups;
pub mod prompt;
pub mod remote;
pub mod report_file;
pub mod run;
pub mod start;
pub mod synthetic;
pub mod worker;
