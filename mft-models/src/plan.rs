//! The memory plan (placeholder while the model compiles).
/// Placeholder.
pub struct MemoryPlan;
