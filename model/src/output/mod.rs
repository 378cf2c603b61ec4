//! What a run leaves behind: the report and its JSON schema ([`report`]) and the `.npz` arrays
//! ([`npz`]).

pub mod npz;
pub mod report;
