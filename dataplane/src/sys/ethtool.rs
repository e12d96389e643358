//! ethtool ioctls. Filled in by the sys work.
