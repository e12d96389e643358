//! Everything that talks to the kernel outside the rings: netlink, ethtool ioctls.
//! All `unsafe` and FFI of the crate lives here and in `xsk/`.

pub mod ethtool;
pub mod netlink;
