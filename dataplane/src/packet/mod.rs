//! Checked zero-copy views over packet bytes. Filled in by the pipeline work.
