//! `lens_app`: the `logit-lens` desktop app ([`gui`]), figures ([`figure`]) and command-line
//! interface ([`cli`]), three faces on one shared layer ([`session`]) that none of them is
//! imported by.

pub mod cli;
pub mod figure;
pub mod gui;
pub mod session;
pub mod view;
