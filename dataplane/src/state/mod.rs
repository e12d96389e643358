//! Atomic persistence under the state dir. Filled in by the control work.
