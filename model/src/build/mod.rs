//! From a checkpoint to a lens bundle: the architecture description ([`spec`], [`names`]), one
//! file per family ([`arch`]: config, tensor plan, block), the ONNX graph with every hook point as
//! an output ([`graph`], which takes the family's block from its caller), block-wise
//! quantization ([`quant`]) and the streaming converter ([`convert`]).

pub mod arch;
pub mod convert;
pub mod graph;
pub mod meta_keys;
pub mod names;
pub mod onnx;
pub mod quant;
pub mod spec;
pub mod vjp;
