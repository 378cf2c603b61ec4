//! Where a model comes from: checkpoint files as the hub ships them (safetensors, shards,
//! `pytorch_model.bin`), the hub client and its cache, `config.json`'s shape, and the tokenizer
//! (long texts tokenized piece by piece), and vectors from `.npy` files. Imports nothing from the
//! later stages.

pub mod checkpoint;
pub mod config;
pub mod hub;
pub mod long_text;
pub mod npy;
pub mod tokenizer;
