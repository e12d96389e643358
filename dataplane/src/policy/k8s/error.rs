//! What a refused document or store operation says: [`PolicyError`] names the file,
//! the document or object and the field; [`ValueError`] is the reason one value (a
//! name, a label, a port, a CIDR, a protocol) is not acceptable, which the caller
//! places at its field.

use std::io;
use std::path::PathBuf;

/// A policy document or store operation that was refused. Nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The text is not YAML (or not the expected shape) at this document.
    #[error("{}document {doc}: invalid YAML: {message}", file_prefix(.file))]
    Yaml {
        file: Option<String>,
        /// 1-based index of the document in its stream.
        doc: usize,
        /// 1-based line, when the parser knows it.
        line: Option<usize>,
        message: String,
    },
    /// An object (`NetworkPolicy x/deny-all`, or `document 3` before its name is known)
    /// with an unacceptable value at `field` (`spec.ingress[0].ports[1].endPort`).
    #[error("{}{object}: {}{message}", file_prefix(.file), field_prefix(.field))]
    Invalid {
        file: Option<String>,
        object: String,
        field: String,
        message: String,
    },
    #[error("read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{object} not found")]
    NotFound { object: String },
}

fn file_prefix(file: &Option<String>) -> String {
    match file {
        Some(f) => format!("{f}: "),
        None => String::new(),
    }
}

fn field_prefix(field: &str) -> String {
    if field.is_empty() || field == "." {
        String::new()
    } else {
        format!("{field}: ")
    }
}

impl PolicyError {
    /// The field path the error is about, if any.
    pub fn field(&self) -> Option<&str> {
        match self {
            PolicyError::Invalid { field, .. } if !field.is_empty() => Some(field),
            _ => None,
        }
    }

    pub(super) fn with_file(mut self, name: &str) -> Self {
        match &mut self {
            PolicyError::Yaml { file, .. } | PolicyError::Invalid { file, .. } => {
                *file = Some(name.to_string())
            }
            PolicyError::Read { .. } | PolicyError::NotFound { .. } => {}
        }
        self
    }
}

pub(super) fn invalid(
    object: &str,
    field: impl Into<String>,
    message: impl Into<String>,
) -> PolicyError {
    PolicyError::Invalid {
        file: None,
        object: object.to_string(),
        field: field.into(),
        message: message.into(),
    }
}

/// Why one value is not acceptable (the message names the value and the rule).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ValueError(pub String);

impl From<String> for ValueError {
    fn from(s: String) -> Self {
        ValueError(s)
    }
}

impl From<&str> for ValueError {
    fn from(s: &str) -> Self {
        ValueError(s.to_string())
    }
}

impl From<ValueError> for String {
    fn from(e: ValueError) -> Self {
        e.0
    }
}
