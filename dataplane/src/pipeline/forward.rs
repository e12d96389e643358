//! IPv4 forward stage. Filled in by the pipeline work.
