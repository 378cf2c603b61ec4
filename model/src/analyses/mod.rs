//! What is computed from many lens runs: corpus mode over a whole text ([`corpus`]) and two runs
//! side by side ([`compare`]). Each drives the engine and writes a file of its own.

pub mod compare;
pub mod corpus;
