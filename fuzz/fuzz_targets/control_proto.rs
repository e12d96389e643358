//! Fuzz the control socket's request decoder, `decode_any` (what the daemon's control
//! server calls on every received line, before any handler runs). Whatever the bytes:
//! no panic; an error becomes a response line that decodes back; an accepted request,
//! encoded the way the client sends it, decodes to the same request (what the daemon
//! accepts, a client can say, and nothing is lost on the way).
//!
//! Seeds: one valid request of every op.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use xsknet_proto::wire::{
    decode_any, decode_request, encode_response, AnyRequest, Envelope, PolicyRequest, Response,
    PROTOCOL_VERSION,
};

/// Whether `v` holds a non-integer number: serde_json without `float_roundtrip` may
/// parse such a number one ULP off, so its round trip is only checked for success.
fn has_float(v: &Value) -> bool {
    match v {
        Value::Number(n) => n.is_f64(),
        Value::Array(a) => a.iter().any(has_float),
        Value::Object(m) => m.values().any(has_float),
        _ => false,
    }
}

fuzz_target!(|data: &[u8]| {
    match decode_any(data) {
        Ok(AnyRequest::Core(r)) => {
            let line = serde_json::to_vec(&Envelope::new(r.clone())).expect("encode request");
            assert_eq!(decode_request(&line).expect("re-decode"), r);
            assert_eq!(decode_any(&line).expect("re-decode"), AnyRequest::Core(r));
        }
        Ok(AnyRequest::Policy(p)) => {
            let mut v = serde_json::to_value(&p).expect("encode policy request");
            v["v"] = Value::from(PROTOCOL_VERSION);
            let line = serde_json::to_vec(&v).expect("encode policy request");
            let again = decode_any(&line).expect("re-decode");
            let floats = matches!(&p, PolicyRequest::Trace { port, .. } if has_float(port));
            if !floats {
                assert_eq!(again, AnyRequest::Policy(p));
            }
        }
        Err(e) => {
            let line = encode_response(&Response::from(e));
            let body = line.strip_suffix(b"\n").expect("one line");
            let back: Response = serde_json::from_slice(body).expect("response decodes");
            assert!(!back.ok && back.error.is_some());
        }
    }
});
