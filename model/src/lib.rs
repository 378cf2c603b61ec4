//! `lens_model`: everything in logit-lens that is not UI.
//!
//! Hugging Face checkpoints (GPT-2, GPT-Neo, CTRL, GPT-NeoX/Pythia, GPT-J, Llama, Mistral, Qwen, Gemma) are converted into *lens bundles* (an ONNX graph that exposes every residual
//! hook point as an output), run through ONNX Runtime, and decoded at every site by a streaming
//! metric kernel into a [`report::LensReport`]. See `DESIGN.md` §1–§4 for the contracts.

pub mod arch;
pub mod attribution;
pub mod bundle;
pub mod checkpoint;
pub mod compare;
pub mod config;
pub mod convert;
pub mod corpus;
pub mod cuda_libs;
pub mod engine;
pub mod error;
pub mod graph;
pub mod grid;
pub mod hub;
pub mod last_block;
pub mod lens;
pub mod lens_graph;
pub mod long_text;
pub mod metrics;
pub mod npz;
pub mod onnx;
pub mod quant;
pub mod report;
pub mod resolve;
pub mod runtime;
pub mod simd;
pub mod sites;
pub mod tokenizer;
pub mod trace;
pub mod tuned_lens;

pub use engine::{LensEngine, LensOptions, TokenGroup};
pub use error::{LensError, Result};
pub use report::LensReport;
pub use runtime::Device;
