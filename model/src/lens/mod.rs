//! Decoding a residual vector into the vocabulary: the decoders and the streaming kernel
//! ([`kernel`]), the last-block decoders' inputs ([`last_block`]), the per-cell metrics
//! ([`metrics`]) and their vectorised maths ([`simd`]), tuned lenses (reading, hashing, fitting:
//! [`tuned_lens`]), J-lenses (reading, the published ones: [`jacobian_lens`]), the lens run as one ONNX graph ([`graph`]) and the direct logit attribution of
//! attention and MLP outputs ([`attribution`]).

pub mod attribution;
pub mod graph;
pub mod jacobian_lens;
pub mod kernel;
pub mod last_block;
pub mod metrics;
pub mod simd;
pub mod torch_save;
pub mod tuned_lens;
