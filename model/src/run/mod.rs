//! Running a bundle: ONNX Runtime sessions and providers ([`runtime`], [`cuda_libs`]), the bundle
//! on disk ([`bundle`]) and how a model argument becomes one ([`resolve`]), the hook sites
//! ([`sites`]), a forward pass's trace ([`trace`]) and a patched one ([`patched`]) and [`engine::LensEngine`],
//! which ties tokenizer, session, decoder and kernel into a report.

pub mod bundle;
pub mod cuda_libs;
pub mod engine;
pub mod gradients;
pub mod patched;
pub mod resolve;
pub mod runtime;
pub mod sites;
pub mod trace;
