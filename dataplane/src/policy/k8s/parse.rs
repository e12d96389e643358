//! Parsing: two passes over a multi-document YAML stream (see the [module doc](super)),
//! from text, a file or a directory of `*.yaml`/`*.yml` files.

use std::fs;
use std::path::Path;

use serde::Deserialize;

use super::error::{invalid, PolicyError};
use super::names::{check_dns_label, check_dns_subdomain, check_label_key, check_label_value};
use super::objects::{describe, Namespace, NetworkPolicy, Object, ObjectMeta, Pod};
use super::{CORE_V1, DEFAULT_NAMESPACE, NETWORKING_V1};

/// Largest YAML stream parsed (a file of `policyDir` or a `policy apply` request).
pub const MAX_YAML_BYTES: usize = 1 << 20;
/// Deepest nesting of collections (block indentation levels, `- ` items and flow
/// `[`/`{` together) accepted in a YAML stream. Real NetworkPolicies nest about 8 deep;
/// the YAML parser's time grows with nesting, so deeper streams are refused by a
/// linear pre-scan before the parser sees them.
pub const MAX_YAML_DEPTH: usize = 64;

/// Parse and validate every document of a YAML stream. Empty documents are skipped.
/// `file` (if any) prefixes error messages. Streams over [`MAX_YAML_BYTES`] or nested
/// deeper than [`MAX_YAML_DEPTH`] are refused before parsing.
pub fn parse_yaml(text: &str, file: Option<&str>) -> Result<Vec<Object>, PolicyError> {
    check_limits(text)
        .and_then(|()| parse_yaml_inner(text))
        .map_err(|e| match file {
            Some(f) => e.with_file(f),
            None => e,
        })
}

/// Parse every `*.yaml`/`*.yml` file of a directory (not recursive), in name order.
/// Fails on the first invalid file, naming it.
pub fn parse_dir(dir: &Path) -> Result<Vec<Object>, PolicyError> {
    let read_err = |source| PolicyError::Read {
        path: dir.to_path_buf(),
        source,
    };
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).map_err(read_err)? {
        let path = entry.map_err(read_err)?.path();
        let is_yaml = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e == "yaml" || e == "yml");
        if is_yaml && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    let mut out = Vec::new();
    for path in files {
        out.extend(parse_file(&path)?);
    }
    Ok(out)
}

/// Parse one file.
pub fn parse_file(path: &Path) -> Result<Vec<Object>, PolicyError> {
    let text = fs::read_to_string(path).map_err(|source| PolicyError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_yaml(&text, Some(&path.display().to_string()))
}

struct Header {
    kind: String,
    meta: ObjectMeta,
    /// How errors name the object before/after its name is known.
    object: String,
}

fn yaml_error(doc: usize, e: serde_yaml_ng::Error) -> PolicyError {
    PolicyError::Yaml {
        file: None,
        doc,
        line: e.location().map(|l| l.line()),
        message: e.to_string(),
    }
}

/// The linear pre-scan behind [`MAX_YAML_BYTES`] and [`MAX_YAML_DEPTH`]. It
/// over-approximates the depth (a `[` opening a token in a plain scalar counts), never
/// under-approximates it, and runs in one pass over the bytes.
pub fn check_limits(text: &str) -> Result<(), PolicyError> {
    if text.len() > MAX_YAML_BYTES {
        return Err(PolicyError::Yaml {
            file: None,
            doc: 1,
            line: None,
            message: format!(
                "stream is {} bytes, over the limit of {MAX_YAML_BYTES} bytes (MAX_YAML_BYTES)",
                text.len()
            ),
        });
    }
    #[derive(PartialEq)]
    enum Quote {
        None,
        Single,
        Double,
    }
    let mut doc = 1;
    let mut indents: Vec<usize> = Vec::new();
    let mut flow = 0usize;
    let mut quote = Quote::None;
    // Indentation of the line that opened a block scalar (`|`, `>`): deeper lines are
    // its content.
    let mut block_scalar: Option<usize> = None;
    for (i, line) in text.split('\n').enumerate() {
        let too_deep = |doc: usize, depth: usize| {
            PolicyError::Yaml {
            file: None,
            doc,
            line: Some(i + 1),
            message: format!(
                "collections nested {depth} deep, over the limit of {MAX_YAML_DEPTH} (MAX_YAML_DEPTH)"
            ),
        }
        };
        let bytes = line.as_bytes();
        let indent = bytes.iter().take_while(|&&b| b == b' ').count();
        let rest = &bytes[indent..];
        let blank = rest.iter().all(|b| b.is_ascii_whitespace());
        if let Some(parent) = block_scalar {
            if blank || indent > parent {
                continue;
            }
            block_scalar = None;
        }
        if quote == Quote::None && flow == 0 {
            if indent == 0 && (rest.starts_with(b"---") || rest.starts_with(b"...")) {
                if rest.starts_with(b"---") {
                    doc += 1;
                }
                indents.clear();
            }
            if blank || rest.first() == Some(&b'#') {
                continue;
            }
            while indents.last().is_some_and(|&l| l > indent) {
                indents.pop();
            }
            if indents.last() != Some(&indent) {
                indents.push(indent);
            }
        }
        let base = if flow == 0 && quote == Quote::None {
            indents.len()
        } else {
            indents.len().max(1)
        };
        let mut dashes = 0;
        let mut token_start = true;
        let mut last_significant = b' ';
        let mut j = if quote == Quote::None { indent } else { 0 };
        while j < bytes.len() {
            let b = bytes[j];
            match quote {
                Quote::Double => {
                    if b == b'\\' {
                        j += 1;
                    } else if b == b'"' {
                        quote = Quote::None;
                        token_start = false;
                    }
                    j += 1;
                    continue;
                }
                Quote::Single => {
                    if b == b'\'' {
                        if bytes.get(j + 1) == Some(&b'\'') {
                            j += 1;
                        } else {
                            quote = Quote::None;
                            token_start = false;
                        }
                    }
                    j += 1;
                    continue;
                }
                Quote::None => {}
            }
            match b {
                b'#' if token_start => break,
                b'"' if token_start || flow > 0 => quote = Quote::Double,
                b'\'' if token_start || flow > 0 => quote = Quote::Single,
                b'[' | b'{' if token_start || flow > 0 => {
                    flow += 1;
                    let depth = base + dashes + flow;
                    if depth > MAX_YAML_DEPTH {
                        return Err(too_deep(doc, depth));
                    }
                }
                b']' | b'}' if flow > 0 => flow -= 1,
                b'-' if flow == 0
                    && token_start
                    && matches!(bytes.get(j + 1), None | Some(b' ')) =>
                {
                    dashes += 1;
                    let depth = base + dashes;
                    if depth > MAX_YAML_DEPTH {
                        return Err(too_deep(doc, depth));
                    }
                }
                _ => {}
            }
            // Indicators start a token only where they are indicators: in flow context.
            token_start =
                matches!(b, b' ' | b'\t') || flow > 0 && matches!(b, b'[' | b'{' | b',' | b':');
            if !b.is_ascii_whitespace() {
                last_significant = b;
            }
            j += 1;
        }
        if base + dashes > MAX_YAML_DEPTH {
            return Err(too_deep(doc, base + dashes));
        }
        // A block scalar indicator (`|`, `>`, with chomping/indent digits) ends the line.
        if flow == 0 && quote == Quote::None {
            let t = line.trim_end();
            let t = t.trim_end_matches(|c: char| c == '+' || c == '-' || c.is_ascii_digit());
            let indicator = (t.ends_with('|') || t.ends_with('>'))
                && matches!(t.as_bytes().iter().rev().nth(1), None | Some(b' '));
            if indicator && matches!(last_significant, b'|' | b'>' | b'+' | b'-' | b'0'..=b'9') {
                block_scalar = Some(indent);
            }
        }
    }
    Ok(())
}

fn parse_yaml_inner(text: &str) -> Result<Vec<Object>, PolicyError> {
    // Pass 1: generic values, for kind/apiVersion/name and syntax errors.
    let mut headers: Vec<Option<Header>> = Vec::new();
    for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let n = i + 1;
        let value = serde_yaml_ng::Value::deserialize(doc).map_err(|e| yaml_error(n, e))?;
        headers.push(header(n, &value)?);
    }
    // Pass 2: typed decoding of the same documents, with paths and lines.
    let mut out = Vec::new();
    for (doc, h) in serde_yaml_ng::Deserializer::from_str(text).zip(headers) {
        if let Some(h) = h {
            out.push(decode(doc, &h)?);
        }
    }
    Ok(out)
}

fn header(doc: usize, value: &serde_yaml_ng::Value) -> Result<Option<Header>, PolicyError> {
    use serde_yaml_ng::Value;
    let map = match value {
        Value::Null => return Ok(None),
        Value::Mapping(m) => m,
        _ => {
            return Err(invalid(
                &format!("document {doc}"),
                "",
                "expected a Kubernetes object (a mapping with apiVersion and kind)",
            ))
        }
    };
    let unnamed = format!("document {doc}");
    let get_str = |key: &str| -> Result<Option<String>, PolicyError> {
        match map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(invalid(&unnamed, key, "must be a string")),
        }
    };
    let kind = get_str("kind")?.ok_or_else(|| invalid(&unnamed, "kind", "required"))?;
    let api_version =
        get_str("apiVersion")?.ok_or_else(|| invalid(&unnamed, "apiVersion", "required"))?;
    let (expected_api, namespaced) = match kind.as_str() {
        "NetworkPolicy" => (NETWORKING_V1, true),
        "Namespace" => (CORE_V1, false),
        "Pod" => (CORE_V1, true),
        other => {
            return Err(invalid(
                &unnamed,
                "kind",
                format!("unknown kind {other:?} (expected NetworkPolicy, Namespace or Pod)"),
            ))
        }
    };
    let with_kind = format!("{kind} in document {doc}");
    if api_version != expected_api {
        return Err(invalid(
            &with_kind,
            "apiVersion",
            format!(
                "unsupported apiVersion {api_version:?} for {kind} (expected {expected_api:?})"
            ),
        ));
    }
    let meta_value = map.get("metadata").cloned().unwrap_or(Value::Null);
    let mut meta: ObjectMeta = if meta_value.is_null() {
        ObjectMeta::default()
    } else {
        serde_path_to_error::deserialize(meta_value).map_err(|e| {
            let field = format!("metadata.{}", e.path());
            invalid(&with_kind, field, strip_path(e.into_inner().to_string()))
        })?
    };
    if meta.name.is_empty() {
        return Err(invalid(&with_kind, "metadata.name", "required"));
    }
    if namespaced {
        if meta.namespace.is_empty() {
            meta.namespace = DEFAULT_NAMESPACE.to_string();
        }
    } else {
        // Cluster-scoped: a namespace written there means nothing.
        meta.namespace.clear();
    }
    let object = describe(&kind, &meta);
    let name_check = if kind == "Namespace" {
        check_dns_label(&meta.name)
    } else {
        check_dns_subdomain(&meta.name)
    };
    name_check.map_err(|m| invalid(&object, "metadata.name", m))?;
    if namespaced {
        check_dns_label(&meta.namespace).map_err(|m| invalid(&object, "metadata.namespace", m))?;
    }
    for (k, v) in &meta.labels {
        check_label_key(k).map_err(|m| invalid(&object, "metadata.labels", m))?;
        check_label_value(v).map_err(|m| invalid(&object, format!("metadata.labels.{k}"), m))?;
    }
    Ok(Some(Header { kind, meta, object }))
}

/// serde_yaml_ng prefixes some messages with its own (shorter) path; ours is better.
fn strip_path(message: String) -> String {
    match message.split_once(": ") {
        Some((prefix, rest))
            if !prefix.contains(' ') && (prefix.contains('.') || prefix.contains('[')) =>
        {
            rest.to_string()
        }
        _ => message,
    }
}

fn decode(doc: serde_yaml_ng::Deserializer<'_>, h: &Header) -> Result<Object, PolicyError> {
    fn typed<'de, T: Deserialize<'de>>(
        doc: serde_yaml_ng::Deserializer<'de>,
        object: &str,
    ) -> Result<T, PolicyError> {
        serde_path_to_error::deserialize(doc).map_err(|e| {
            let field = e.path().to_string();
            invalid(object, field, strip_path(e.into_inner().to_string()))
        })
    }
    let o = h.object.as_str();
    let object = match h.kind.as_str() {
        "NetworkPolicy" => {
            let mut p: NetworkPolicy = typed(doc, o)?;
            p.metadata = h.meta.clone();
            p.validate(o)?;
            Object::NetworkPolicy(p)
        }
        "Namespace" => {
            let mut n: Namespace = typed(doc, o)?;
            n.metadata = h.meta.clone();
            Object::Namespace(n)
        }
        _ => {
            let mut p: Pod = typed(doc, o)?;
            p.metadata = h.meta.clone();
            p.validate(o)?;
            Object::Pod(p)
        }
    };
    Ok(object)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::k8s::*;
    use std::net::Ipv4Addr;

    fn err(yaml: &str) -> String {
        match parse_yaml(yaml, None) {
            Ok(o) => panic!("accepted: {o:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn policy(spec: &str) -> String {
        format!(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: p\n  namespace: x\nspec:\n{spec}"
        )
    }

    #[test]
    fn nesting_beyond_the_limit_is_refused_fast_naming_the_limit() {
        let t = std::time::Instant::now();
        let deep = format!("a: {}", "[".repeat(97 * 1024));
        let e = err(&deep);
        assert!(
            e.contains("MAX_YAML_DEPTH") && e.contains("nested 65 deep"),
            "{e}"
        );
        let blocks: String = (0..80)
            .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
            .collect();
        assert!(err(&blocks).contains("MAX_YAML_DEPTH"));
        let dashes = format!("a:\n{}x\n", "- ".repeat(70));
        assert!(err(&dashes).contains("MAX_YAML_DEPTH"));
        let spread = format!("a: [\n{}\n", "[\n".repeat(70));
        assert!(err(&spread).contains("MAX_YAML_DEPTH"));
        // Depth within the limit is left to the parser (here: a syntax error, not the limit).
        let ok_depth = format!("a: {}{}", "[".repeat(60), "]".repeat(60));
        assert!(!err(&ok_depth).contains("MAX_YAML_DEPTH"));
        let big = "#".repeat(MAX_YAML_BYTES + 1);
        assert!(err(&big).contains("MAX_YAML_BYTES"));
        assert!(t.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn brackets_in_scalars_comments_and_block_text_do_not_count() {
        let b = "[".repeat(100);
        for text in [
            format!("a: \"{b}\"\n"),
            format!("a: '{b}'\n"),
            format!("a: x{b}\n"),
            format!("# {b}\na: 1\n"),
            format!("a: |\n  {b}\n  more\nb: 2\n"),
            format!("a: >-\n    {b}\nb: 2\n"),
        ] {
            check_limits(&text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        }
        // A real policy passes and parses as before.
        one_policy("  podSelector: {}\n  ingress:\n  - from:\n    - podSelector:\n        matchLabels: {a: b}\n");
    }

    fn one_policy(spec: &str) -> NetworkPolicy {
        match parse_yaml(&policy(spec), None).unwrap().pop() {
            Some(Object::NetworkPolicy(p)) => p,
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn parses_a_full_policy() {
        let p = one_policy(
            r#"
  podSelector:
    matchLabels: {pod: a}
  policyTypes: [Ingress, Egress]
  ingress:
  - from:
    - podSelector: {}
      namespaceSelector:
        matchExpressions:
        - {key: ns, operator: In, values: [y, z]}
    - ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}
    ports:
    - {protocol: UDP, port: 80, endPort: 90}
    - port: http
  egress:
  - {}
"#,
        );
        assert_eq!(p.metadata.namespace, "x");
        let r = &p.ingress_rules()[0];
        let peers = r.from.as_ref().unwrap();
        assert_eq!(peers[0].pod_selector, Some(LabelSelector::default()));
        assert_eq!(peers[1].ip_block.as_ref().unwrap().except.len(), 1);
        let ports = r.ports.as_ref().unwrap();
        assert_eq!(ports[0].protocol(), Protocol::Udp);
        assert_eq!(ports[0].end_port, Some(90));
        assert_eq!(ports[1].port, Some(PortRef::Name("http".into())));
        assert_eq!(ports[1].protocol(), Protocol::Tcp);
        assert!(p.affects(PolicyType::Egress));
    }

    #[test]
    fn multi_document_and_defaults() {
        let y = "---\n# comment only\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: x\n  labels: {team: red}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: a, labels: {pod: a}}\nspec:\n  containers:\n  - name: c\n    ports:\n    - {name: http, containerPort: 80}\n    - {containerPort: 81, protocol: UDP}\nstatus: {podIP: 10.244.0.5}\n---\n";
        let o = parse_yaml(y, None).unwrap();
        assert_eq!(o.len(), 2);
        assert_eq!(o[0].describe(), "Namespace x");
        let Object::Pod(p) = &o[1] else { panic!() };
        assert_eq!(p.metadata.namespace, "default");
        assert_eq!(p.ip(), Some(Ipv4Addr::new(10, 244, 0, 5)));
        assert_eq!(
            p.named_ports(),
            vec![NamedPort {
                name: "http".into(),
                port: 80,
                protocol: Protocol::Tcp
            }]
        );
    }

    #[test]
    fn end_port_below_port_names_object_and_field() {
        let e = err(&policy(
            "  podSelector: {}\n  ingress:\n  - ports:\n    - port: 1\n    - {port: 80, endPort: 70}\n",
        ));
        assert_eq!(
            e,
            "NetworkPolicy x/p: spec.ingress[0].ports[1].endPort: must be >= port (got 70 < 80)"
        );
    }

    #[test]
    fn refusals() {
        let cases: &[(&str, &str)] = &[
            (
                "  ingress:\n  - ports: [{endPort: 80}]\n",
                "spec.ingress[0].ports[0].endPort: may not be specified without port",
            ),
            (
                "  ingress:\n  - ports: [{port: http, endPort: 80}]\n",
                "spec.ingress[0].ports[0].endPort: may not be specified when port is non-numeric",
            ),
            (
                "  ingress:\n  - ports: [{port: 80, endPort: 70000}]\n",
                "endPort: must be between 1 and 65535, inclusive (got 70000)",
            ),
            (
                "  ingress:\n  - ports: [{port: 0}]\n",
                "spec.ingress[0].ports[0].port: must be between 1 and 65535, inclusive (got 0)",
            ),
            (
                "  ingress:\n  - ports: [{port: 65536}]\n",
                "(got 65536)",
            ),
            (
                "  ingress:\n  - ports: [{port: -1}]\n",
                "(got -1)",
            ),
            (
                "  ingress:\n  - ports: [{port: averyveryverylongname}]\n",
                "spec.ingress[0].ports[0].port: invalid port name \"averyveryverylongname\": must be no more than 15 characters",
            ),
            ("  ingress:\n  - ports: [{port: Http}]\n", "lowercase"),
            ("  ingress:\n  - ports: [{port: \"80\"}]\n", "at least one letter"),
            ("  ingress:\n  - ports: [{port: -http}]\n", "begin or end"),
            ("  ingress:\n  - ports: [{port: h--p}]\n", "consecutive"),
            (
                "  ingress:\n  - ports: [{protocol: tcp, port: 80}]\n",
                "spec.ingress[0].ports[0].protocol: unknown variant `tcp`",
            ),
            ("  ingress:\n  - ports: [{protocol: ICMP}]\n", "unknown variant `ICMP`"),
            (
                "  egress:\n  - to: [{ipBlock: {cidr: 10.0.0.0/33}}]\n",
                "spec.egress[0].to[0].ipBlock.cidr: invalid CIDR \"10.0.0.0/33\"",
            ),
            ("  egress:\n  - to: [{ipBlock: {cidr: 10.0.0.0}}]\n", "expected ADDRESS/PREFIX"),
            ("  egress:\n  - to: [{ipBlock: {cidr: 10.0.0.300/8}}]\n", "bad address"),
            ("  egress:\n  - to: [{ipBlock: {cidr: 10.0.0.5/24}}]\n", "host bits set (network is 10.0.0.0/24)"),
            (
                "  egress:\n  - to: [{ipBlock: {cidr: 10.0.0.0/8, except: [11.0.0.0/16]}}]\n",
                "spec.egress[0].to[0].ipBlock.except[0]: must be a strict subset of cidr 10.0.0.0/8 (got 11.0.0.0/16)",
            ),
            ("  egress:\n  - to: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.0.0.0/8]}}]\n", "strict subset"),
            ("  egress:\n  - to: [{ipBlock: {cidr: 10.0.0.0/8, except: [\"::/64\"]}}]\n", "strict subset"),
            (
                "  egress:\n  - to: [{ipBlock: {cidr: 10.0.0.0/8}, podSelector: {}}]\n",
                "spec.egress[0].to[0]: may not specify both ipBlock and another peer",
            ),
            ("  egress:\n  - to: [{}]\n", "spec.egress[0].to[0]: must specify a peer"),
            (
                "  podSelector:\n    matchExpressions: [{key: a, operator: In}]\n",
                "spec.podSelector.matchExpressions[0].values: must be specified when operator is In",
            ),
            (
                "  podSelector:\n    matchExpressions: [{key: a, operator: NotIn, values: []}]\n",
                "must be specified when operator is NotIn",
            ),
            (
                "  podSelector:\n    matchExpressions: [{key: a, operator: Exists, values: [x]}]\n",
                "may not be specified when operator is Exists",
            ),
            (
                "  podSelector:\n    matchExpressions: [{key: a, operator: Equals, values: [x]}]\n",
                "spec.podSelector.matchExpressions[0].operator: unknown variant `Equals`",
            ),
            (
                "  podSelector:\n    matchLabels: {\"bad key!\": x}\n",
                "spec.podSelector.matchLabels: invalid label key",
            ),
            (
                "  podSelector:\n    matchLabels: {app: \"-x\"}\n",
                "spec.podSelector.matchLabels.app: invalid label value",
            ),
            (
                "  ingress:\n  - from: [{namespaceSelector: {matchLabels: {\"Example.com/a\": x}}}]\n",
                "prefix",
            ),
            ("  podSelector: {}\n  policyTypes: [Ingress, Egress, Ingress]\n", "more than two"),
            ("  policyTypes: [Both]\n", "spec.policyTypes[0]: unknown variant `Both`"),
            ("  podselector: {}\n", "spec: unknown field `podselector`"),
            ("  ingress:\n  - from: [{podSelector: {matchLabel: {a: b}}}]\n", "unknown field `matchLabel`"),
        ];
        for (spec, want) in cases {
            let e = err(&policy(spec));
            assert!(e.starts_with("NetworkPolicy x/p: "), "{e}");
            assert!(e.contains(want), "spec {spec:?}\nwant {want:?}\ngot  {e}");
        }
    }

    #[test]
    fn document_level_refusals() {
        let e = err("apiVersion: v1\nkind: Service\nmetadata: {name: s}\n");
        assert_eq!(
            e,
            "document 1: kind: unknown kind \"Service\" (expected NetworkPolicy, Namespace or Pod)"
        );
        let e = err(
            "apiVersion: networking.k8s.io/v1beta1\nkind: NetworkPolicy\nmetadata: {name: s}\n",
        );
        assert!(e.contains("apiVersion: unsupported apiVersion"), "{e}");
        let e = err("apiVersion: v1\nkind: Namespace\nmetadata: {}\n");
        assert_eq!(e, "Namespace in document 1: metadata.name: required");
        let e = err("kind: Namespace\nmetadata: {name: x}\n");
        assert_eq!(e, "document 1: apiVersion: required");
        let e = err("apiVersion: v1\nkind: Namespace\nmetadata: {name: Bad_Name}\n");
        assert!(e.starts_with("Namespace Bad_Name: metadata.name:"), "{e}");
        let e = err("- a\n- b\n");
        assert!(e.contains("expected a Kubernetes object"), "{e}");
        let e = err(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: x, labels: {pod: [a]}}\n",
        );
        assert!(
            e.starts_with("Pod in document 1: metadata.labels.pod: "),
            "{e}"
        );
        let e = err("apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: x}\nspec:\n  containers:\n  - ports: [{containerPort: 99999}]\n");
        assert_eq!(
            e,
            "Pod x/a: spec.containers[0].ports[0].containerPort: must be between 1 and 65535, inclusive (got 99999)"
        );
        let e = err("apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec:\n  containers:\n  - ports: [{containerPort: 80, name: web}, {containerPort: 81, name: web}]\n");
        assert!(e.contains("duplicate port name"), "{e}");
        let e =
            err("apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nstatus: {podIP: 10.0.0.300}\n");
        assert!(e.starts_with("Pod default/a: status.podIP: "), "{e}");
    }

    #[test]
    fn bad_yaml_has_a_line() {
        let y = "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: [y\n";
        match parse_yaml(y, Some("ns.yaml")) {
            Err(PolicyError::Yaml {
                file,
                doc,
                line,
                message,
            }) => {
                assert_eq!(file.as_deref(), Some("ns.yaml"));
                assert_eq!(doc, 2);
                assert!(line.is_some_and(|l| l >= 7), "{line:?} {message}");
            }
            other => panic!("{other:?}"),
        }
        // A type error in the second pass carries its line too.
        let e = err(&policy("  ingress:\n  - ports: [{port: 80, endPort: x}]\n"));
        assert!(e.contains("line 8"), "{e}");
    }

    #[test]
    fn never_panics_on_garbage() {
        let mut seed = 0x1234_5678_u64;
        let pieces = [
            "apiVersion: networking.k8s.io/v1\n",
            "kind: NetworkPolicy\n",
            "kind: Pod\n",
            "metadata: {name: a}\n",
            "spec:\n",
            "  ingress:\n",
            "  - from:\n",
            "    - ",
            "ipBlock: {cidr: 1.2.3.0/24}\n",
            "podSelector: {}\n",
            "ports: [{port: 80}]\n",
            "---\n",
            "[",
            "{",
            "\"",
            ": ",
            "- ",
            "\t",
            "null\n",
            "~",
            "&a ",
            "*a ",
            "!!str ",
            "endPort: 2\n",
            "    ",
            "\n",
        ];
        for _ in 0..3000 {
            let mut s = String::new();
            for _ in 0..12 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                s.push_str(pieces[(seed % pieces.len() as u64) as usize]);
            }
            let _ = parse_yaml(&s, None);
        }
    }

    #[test]
    fn round_trips_through_serde() {
        let y = policy("  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}}]\n    ports: [{port: web}, {port: 80, endPort: 81, protocol: SCTP}]\n");
        let o = parse_yaml(&y, None).unwrap();
        let Object::NetworkPolicy(p) = &o[0] else {
            panic!()
        };
        let json = serde_json::to_string(p).unwrap();
        let back: NetworkPolicy = serde_json::from_str(&json).unwrap();
        assert_eq!(&back, p);
    }
}
