//! Test support for logit-lens: random GPT-2 checkpoints in Hugging Face layout and an independent,
//! naive f64 reference implementation of GPT-2's forward pass and of every lens metric.
//! Nothing here uses `lens_model`: the reference must stay independent of the code it checks.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic, missing_docs)]

pub mod fixture;
pub mod reference;
