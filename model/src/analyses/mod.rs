//! What is computed from many lens runs: corpus mode over a whole text ([`corpus`]), two runs
//! side by side ([`compare`]), the lens-quality suite over prompt sets ([`lens_eval`]) and
//! activation patching and steering ([`patch`], [`steer`]). Each drives the engine and writes a file of its own.

pub mod attribution_patching;
pub mod compare;
pub mod corpus;
pub mod grad_x_act;
pub mod jlens_fit;
pub mod lens_eval;
pub mod patch;
pub mod steer;
