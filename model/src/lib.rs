//! `lens_model`: everything in logit-lens that is not UI.
//!
//! Hugging Face checkpoints (GPT-2, GPT-Neo, CTRL, GPT-NeoX/Pythia, GPT-J, Llama, Mistral, Qwen,
//! Gemma) are converted into *lens bundles* (an ONNX graph that exposes every residual hook point
//! as an output), run through ONNX Runtime, and decoded at every site by a streaming metric kernel
//! into a [`LensReport`]. See `DESIGN.md` §1–§4 for the contracts.
//!
//! The modules follow a model's path through the crate, one folder per stage:
//!
//! [`source`] (checkpoint files, the hub, config, tokenizer) → [`build`] (architectures, the
//! ONNX graph, quantization, the converter) → [`run`] (ONNX Runtime, bundles, the hook sites, the
//! forward pass, the engine) → [`lens`] (decoders and the kernel, metrics, tuned lenses, the lens
//! graph, attribution) → [`output`] (the report, `.npz`) → [`analyses`] (corpus, compare), over a
//! base of [`error`], [`files`] and [`grid`]. A stage imports the stages before it; which
//! exceptions exist (the engine, which ties the stages together) is drawn in `DESIGN.md`
//! ("Layers") and checked by `app/tests/layers.rs`.

pub mod analyses;
pub mod build;
pub mod error;
pub mod files;
pub mod grid;
pub mod lens;
pub mod output;
pub mod remote;
pub mod run;
pub mod source;

pub use error::{LensError, Result};
pub use output::report::LensReport;
pub use run::engine::{LensEngine, LensOptions, TokenGroup};
pub use run::runtime::Device;
