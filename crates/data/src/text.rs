//! Reading raw text sources: file bytes to text (UTF-8, else Latin-1), numbered lines, and the
//! bad-row policy.
//!
//! Owns the plumbing every loader shares. Must not know any file format.

use std::path::{Path, PathBuf};

use crate::config::BadRowPolicy;
use crate::error::DataError;

/// Reads a whole file as text. Valid UTF-8 is taken as is; anything else is decoded as
/// ISO-8859-1 (Latin-1), where every byte is the code point of the same value.
pub(crate) fn read_text(path: &Path) -> Result<String, DataError> {
    let bytes = std::fs::read(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            DataError::MissingFile {
                path: path.to_path_buf(),
            }
        } else {
            DataError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    })?;
    Ok(match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(not_utf8) => decode_latin1(not_utf8.as_bytes()),
    })
}

/// Reads a file known to be ISO-8859-1 (MovieLens item files), without trying UTF-8 first.
pub(crate) fn read_latin1(path: &Path) -> Result<String, DataError> {
    let bytes = std::fs::read(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            DataError::MissingFile {
                path: path.to_path_buf(),
            }
        } else {
            DataError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    })?;
    Ok(decode_latin1(&bytes))
}

pub(crate) fn decode_latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| b as char).collect()
}

/// The non-blank lines of `text` with their 1-based line numbers, '\r' stripped.
/// Fails with [`DataError::EmptyFile`] when there are none.
pub(crate) fn numbered_lines<'a>(
    text: &'a str,
    path: &Path,
) -> Result<Vec<(usize, &'a str)>, DataError> {
    let lines: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .map(|(i, line)| (i + 1, line.trim_end_matches('\r')))
        .filter(|(_, line)| !line.trim().is_empty())
        .collect();
    if lines.is_empty() {
        return Err(DataError::EmptyFile {
            path: path.to_path_buf(),
        });
    }
    Ok(lines)
}

/// Applies the `bad_rows` policy: under `Error` a bad row is returned as the error, under
/// `Drop` it is counted.
pub(crate) struct BadRows {
    policy: BadRowPolicy,
    pub(crate) dropped: usize,
}

impl BadRows {
    pub(crate) fn new(policy: BadRowPolicy) -> Self {
        BadRows { policy, dropped: 0 }
    }

    pub(crate) fn reject(&mut self, error: DataError) -> Result<(), DataError> {
        match self.policy {
            BadRowPolicy::Error => Err(error),
            BadRowPolicy::Drop => {
                self.dropped += 1;
                Ok(())
            }
        }
    }
}

/// The longest excerpt of a line or field an error message quotes, in characters.
pub const EXCERPT_CHARS: usize = 120;

/// `text` cut to [`EXCERPT_CHARS`] characters, saying how long it was when cut: messages quote
/// input, and input can be a 10 MB line.
pub fn excerpt(text: &str) -> String {
    match text.char_indices().nth(EXCERPT_CHARS) {
        None => text.to_string(),
        Some((cut, _)) => format!("{}... ({} bytes in all)", &text[..cut], text.len()),
    }
}

/// A malformed-row error for `line` of `path`; the line is quoted as a bounded excerpt.
pub(crate) fn malformed(
    path: &Path,
    line: usize,
    content: &str,
    reason: impl Into<String>,
) -> DataError {
    DataError::MalformedRow {
        path: PathBuf::from(path),
        line,
        content: excerpt(content),
        reason: reason.into(),
    }
}

/// Reads a whole file that must be UTF-8; the first invalid byte is reported at its line.
pub(crate) fn read_utf8(path: &Path) -> Result<String, DataError> {
    let bytes = read_bytes(path)?;
    match String::from_utf8(bytes) {
        Ok(text) => Ok(text),
        Err(error) => {
            let bytes = error.as_bytes();
            let at = error.utf8_error().valid_up_to();
            let line_start = bytes[..at].iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            let line_end = bytes[at..].iter().position(|&b| b == b'\n').map_or(bytes.len(), |i| at + i);
            let line = bytes[..at].iter().filter(|&&b| b == b'\n').count() + 1;
            Err(malformed(
                path,
                line,
                &String::from_utf8_lossy(&bytes[line_start..line_end]),
                format!(
                    "byte 0x{:02x} at column {} is not valid UTF-8 (save the file as UTF-8)",
                    bytes[at],
                    at - line_start + 1
                ),
            ))
        }
    }
}

fn read_bytes(path: &Path) -> Result<Vec<u8>, DataError> {
    std::fs::read(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            DataError::MissingFile {
                path: path.to_path_buf(),
            }
        } else {
            DataError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    })
}
