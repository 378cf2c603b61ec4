//! Qwen2 / Qwen2.5 (`qwen2`: Llama with query/key/value biases) and Qwen3 (`qwen3`: Llama with a
//! per-head RMSNorm of queries and keys and an explicit `head_dim`). Their tensor names and block
//! are Llama's (`llama.rs`).

use std::path::Path;

use super::llama::{LlamaConfig, llama_like};
use super::{Arch, Family};
use crate::error::Result;

/// The internal shape of a Qwen2 or Qwen3 config.
pub fn arch(family: Family, c: LlamaConfig, path: &Path) -> Result<Arch> {
    match family {
        Family::Qwen3 => llama_like(family, c, path, false, true),
        _ => llama_like(family, c, path, true, false),
    }
}
