//! Blocking client used by xsknetctl and the CNI plugin. Filled in by the control work.
