//! The parts of the load generator that other tools use: its JSON summary.

pub mod summary;
