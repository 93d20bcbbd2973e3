//! Automatic canary analysis, the pure part: per model, a rollout moves a canary through weight steps; every
//! interval the canary is measured against stable over a sliding window ([`analysis`]), and the state machine
//! ([`machine`]) turns the result into a decision (advance, hold, promote or roll back). The policy and its
//! per-model layering are in [`policy`]; the cumulative counters the measurements come from, with their
//! "snapshot, diff with `since()`" shape, are in [`stats`]. Nothing here acts: the rollout controller
//! (`crate::controller`) takes samples, applies decisions to the routing and journals them.

pub mod analysis;
pub mod machine;
pub mod policy;
pub mod stats;
