//! Fuzz the NetworkPolicy/Namespace/Pod YAML parser and the store's apply: whatever
//! the bytes (as lossy UTF-8), `parse_yaml` returns `Ok` or `Err` without panicking,
//! and whatever it accepts, `PolicyStore::apply_objects` validates and applies (or
//! refuses) without panicking. Seeds: the example policies of config/policies.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xsknet_dataplane::policy::k8s;
use xsknet_dataplane::policy::store::PolicyStore;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(objects) = k8s::parse_yaml(&text, Some("fuzz")) {
        let mut store = PolicyStore::default();
        if store.apply_objects(objects).is_ok() {
            // Applying the same text again must also work (all unchanged).
            let _ = store.apply_yaml_named(&text, "fuzz");
            let _ = store.list();
            let _ = store.pod_views();
        }
    }
});
