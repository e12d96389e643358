//! The API server's name and label syntax: RFC 1123 DNS labels and subdomains (object
//! names, namespaces), label keys (`[prefix/]name`) and values. Each check returns a
//! [`ValueError`] naming the value and the rule it breaks.

use std::collections::BTreeMap;

use super::error::ValueError;

fn is_alnum(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

/// The name part of a qualified name or a non-empty label value:
/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, at most 63 characters.
fn check_qualified_part(s: &str) -> Result<(), &'static str> {
    let b = s.as_bytes();
    if b.is_empty() {
        return Err("must not be empty");
    }
    if b.len() > 63 {
        return Err("must be no more than 63 characters");
    }
    if !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return Err("must begin and end with an alphanumeric character");
    }
    if !b
        .iter()
        .all(|&c| is_alnum(c) || c == b'-' || c == b'_' || c == b'.')
    {
        return Err("must consist of alphanumerics, '-', '_' or '.'");
    }
    Ok(())
}

/// RFC 1123 subdomain: lowercase alphanumeric labels with inner `-`, joined by `.`,
/// at most 253 characters.
pub fn check_dns_subdomain(s: &str) -> Result<(), ValueError> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > 253 {
        return Err(format!("{s:?}: must be no more than 253 characters").into());
    }
    for part in s.split('.') {
        check_dns_label_chars(part)
            .map_err(|m| format!("{s:?}: must be a lowercase RFC 1123 subdomain ({m})"))?;
    }
    Ok(())
}

/// RFC 1123 label: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters.
pub fn check_dns_label(s: &str) -> Result<(), ValueError> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > 63 {
        return Err(format!("{s:?}: must be no more than 63 characters").into());
    }
    check_dns_label_chars(s)
        .map_err(|m| format!("{s:?}: must be a lowercase RFC 1123 label ({m})").into())
}

fn check_dns_label_chars(s: &str) -> Result<(), &'static str> {
    let b = s.as_bytes();
    let ok = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if b.is_empty() {
        return Err("empty part");
    }
    if !ok(b[0]) || !ok(b[b.len() - 1]) {
        return Err("must begin and end with a lowercase letter or digit");
    }
    if !b.iter().all(|&c| ok(c) || c == b'-') {
        return Err("only lowercase letters, digits and '-'");
    }
    Ok(())
}

/// A label key: `[prefix/]name`, prefix a DNS subdomain, name a qualified part.
pub fn check_label_key(key: &str) -> Result<(), ValueError> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        check_dns_subdomain(p).map_err(|m| format!("invalid label key {key:?}: prefix {m}"))?;
    }
    check_qualified_part(name)
        .map_err(|m| format!("invalid label key {key:?}: name part {m}").into())
}

/// A label value: empty, or a qualified part.
pub fn check_label_value(value: &str) -> Result<(), ValueError> {
    if value.is_empty() {
        return Ok(());
    }
    check_qualified_part(value).map_err(|m| format!("invalid label value {value:?}: {m}").into())
}

/// Check a whole label map (keys and values).
pub fn check_labels(labels: &BTreeMap<String, String>) -> Result<(), ValueError> {
    for (k, v) in labels {
        check_label_key(k)?;
        check_label_value(v)?;
    }
    Ok(())
}
