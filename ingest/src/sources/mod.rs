//! Feeds. Each source yields unsequenced ticks (no `seq`, `epoch` or `ts`); the
//! sequencer stamps them.

pub mod sim;
