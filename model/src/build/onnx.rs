//! ONNX protobuf types, generated at build time by prost + protox from the vendored `proto/onnx.proto`.
#![allow(missing_docs, clippy::all, clippy::pedantic, clippy::unwrap_used, clippy::indexing_slicing)]

include!(concat!(env!("OUT_DIR"), "/onnx.rs"));

/// `TensorProto.DataType.FLOAT`.
pub const DT_FLOAT: i32 = 1;
/// `TensorProto.DataType.UINT8`.
pub const DT_UINT8: i32 = 2;
/// `TensorProto.DataType.INT64`.
pub const DT_INT64: i32 = 7;
/// `TensorProto.DataType.BOOL`.
pub const DT_BOOL: i32 = 9;
/// `TensorProto.DataType.FLOAT16`.
pub const DT_FLOAT16: i32 = 10;
/// `TensorProto.DataType.BFLOAT16`.
pub const DT_BFLOAT16: i32 = 16;
