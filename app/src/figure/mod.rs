//! Figures for papers: one drawing description ([`scene::Scene`]) built from the same
//! [`ViewModel`](crate::view::model::ViewModel) the on-screen panels paint, written as SVG (text
//! stays text), PDF (fonts embedded), PNG (any scale, pixel density recorded) or one
//! self-contained HTML page ([`html`]: hover shows a cell's top-k, a click its trajectories), each
//! carrying its provenance so that `logit-lens render --from FIG` can regenerate it.

pub mod compare;
pub mod corpus;
pub mod export;
pub mod html;
pub mod lens_eval;
pub mod output;
pub mod provenance;
pub mod scene;
pub mod spec;
pub mod svg;
