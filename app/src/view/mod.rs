//! The view layer under every face: [`settings`] (what to show), [`model`] (a report turned into
//! the rows, columns, colours and labels of every panel) and [`theme`] (colour maps and colours).
//! No egui: colours are `ecolor`'s plain RGBA type, which egui also uses.

pub mod model;
pub mod settings;
pub mod theme;
