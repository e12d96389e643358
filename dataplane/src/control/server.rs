//! mio server. Filled in by the control work.
