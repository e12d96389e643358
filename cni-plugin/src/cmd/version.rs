//! VERSION: the versions this plugin speaks. Answers whatever the configuration says
//! (even nothing), so a runtime can always negotiate.

use serde_json::{json, Value};

use crate::config::SUPPORTED_VERSIONS;

pub fn run(requested: Option<&str>) -> Value {
    json!({
        "cniVersion": requested.unwrap_or("1.1.0"),
        "supportedVersions": SUPPORTED_VERSIONS,
    })
}
