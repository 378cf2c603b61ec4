//! `lens_app`: the `logit-lens` desktop app ([`gui`]) and command-line interface ([`cli`]).

pub mod cli;
pub mod figure;
pub mod gui;
