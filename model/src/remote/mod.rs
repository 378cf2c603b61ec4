//! The lens on a model that runs elsewhere: in a Python environment through nnsight, on this
//! machine or on NDIF ([`nnsight`]).

pub mod nnsight;
