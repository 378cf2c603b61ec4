//! What a run leaves behind: the report and its JSON schema ([`report`]), its grids assembled from
//! the kernel's rows ([`assemble`]), and the `.npz` arrays ([`npz`]).

pub mod assemble;
pub mod npz;
pub mod report;
