//! The panels: each reads [`super::state::AppState`] and pushes [`super::command::AppCommand`]s.

pub mod contributions;
pub mod corpus;
pub mod fit;
pub mod heatmap;
pub mod inspector;
pub mod jlens_fit;
pub mod patch;
pub mod prompt;
pub mod remote;
pub mod status;
