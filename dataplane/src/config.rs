//! node.yaml. Filled in by the control work.
