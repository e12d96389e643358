//! Synchronous rtnetlink. Filled in by the sys work.
