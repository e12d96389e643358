//! Filled in by the policy work.
