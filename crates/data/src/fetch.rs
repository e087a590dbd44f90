//! Downloading the official data sets: `limaml data fetch`.
//!
//! Owns the table of known archives ([`KNOWN`]: name, official URL, sha256, unpacked folder), the
//! download (HTTP(S) through `ureq`, streamed to disk while hashing), the sha256 check, and the
//! unpacking. An archive is unpacked into a hidden staging folder beside the target and renamed
//! into place only once everything is written, so a failed or refused fetch never leaves a
//! half-unpacked data folder behind. Errors are typed ([`FetchError`]).
//!
//! Must not print or draw anything (progress goes to the caller's callback), must not decide
//! exit codes, and must not unpack anything whose digest has not been checked.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};

/// An archive `limaml data fetch NAME` knows how to fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownArchive {
    /// The name on the command line: `movielens-100k`.
    pub name: &'static str,
    /// The official download URL.
    pub url: &'static str,
    /// The sha256 of the official archive (lowercase hex).
    pub sha256: &'static str,
    /// The archive's size in bytes (informational; the digest is what is checked).
    pub size: u64,
    /// The single top-level folder the archive unpacks to: `ml-100k`.
    pub folder: &'static str,
}

/// The archives `limaml data fetch` knows. Digests and sizes are those GroupLens serves at these
/// URLs, as pinned by `tensorflow_datasets/url_checksums/movielens.txt` (tensorflow/datasets);
/// they agree with GroupLens's published MD5s (0e33842e…0723 for 100K, c4d9eecf…0906 for 1M)
/// as recorded by independent projects that checked both.
pub const KNOWN: &[KnownArchive] = &[
    KnownArchive {
        name: "movielens-100k",
        url: "https://files.grouplens.org/datasets/movielens/ml-100k.zip",
        sha256: "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
        size: 4_924_029,
        folder: "ml-100k",
    },
    KnownArchive {
        name: "movielens-1m",
        url: "https://files.grouplens.org/datasets/movielens/ml-1m.zip",
        sha256: "a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
        size: 5_917_549,
        folder: "ml-1m",
    },
];

/// The names [`KNOWN`] answers to, in order.
pub fn known_names() -> Vec<&'static str> {
    KNOWN.iter().map(|archive| archive.name).collect()
}

/// The known archive called `name`, or [`FetchError::UnknownName`] listing the known names.
pub fn lookup(name: &str) -> Result<&'static KnownArchive, FetchError> {
    KNOWN
        .iter()
        .find(|archive| archive.name == name)
        .ok_or_else(|| FetchError::UnknownName {
            name: name.to_string(),
            known: known_names(),
        })
}

/// Every way fetching can fail.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("unknown data set `{name}` (known: {})", known.join(", "))]
    UnknownName {
        name: String,
        known: Vec<&'static str>,
    },

    #[error("`{digest}` is not a sha256 digest (expected 64 hexadecimal digits)")]
    MalformedDigest { digest: String },

    #[error("{} already exists; remove it to fetch again", path.display())]
    AlreadyExists { path: PathBuf },

    #[error("cannot download {url}: {source}")]
    Request {
        url: String,
        #[source]
        source: Box<ureq::Error>,
    },

    #[error("download of {url} broke off after {received} bytes: {source}")]
    Transfer {
        url: String,
        received: u64,
        #[source]
        source: std::io::Error,
    },

    #[error("sha256 mismatch for {url}: expected {expected}, got {actual} ({bytes} bytes); nothing was unpacked")]
    DigestMismatch {
        url: String,
        expected: String,
        actual: String,
        bytes: u64,
    },

    #[error("{url} is not a usable zip archive: {reason}")]
    BadArchive { url: String, reason: String },

    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What the fetch is doing, for a progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchEvent {
    /// Response headers are in; `total` is the Content-Length when the server sent one.
    Started { total: Option<u64> },
    /// `downloaded` bytes of the body are on disk so far.
    Downloaded { downloaded: u64 },
    /// The download is complete and its digest matched; unpacking starts.
    Unpacking,
}

/// A completed fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The unpacked folder: `DIR/ml-100k`.
    pub path: PathBuf,
    /// The sha256 of the downloaded archive (lowercase hex), equal to the expected one.
    pub sha256: String,
    /// The archive's size in bytes.
    pub bytes: u64,
}

/// Fetches the known archive `name` into `dir` (from `url` instead of the official URL when
/// given; the official digest is still required). Refuses before downloading if `dir` already
/// holds the archive's folder.
pub fn fetch_known(
    name: &str,
    dir: &Path,
    url: Option<&str>,
    progress: &mut dyn FnMut(FetchEvent),
) -> Result<Fetched, FetchError> {
    let archive = lookup(name)?;
    let target = dir.join(archive.folder);
    if target.exists() {
        return Err(FetchError::AlreadyExists { path: target });
    }
    fetch_url_with_progress(url.unwrap_or(archive.url), archive.sha256, dir, progress)
}

/// Downloads the zip at `url`, checks that its sha256 is `expected_sha256` (hex, either case),
/// and unpacks it into `dir`, which is created if missing. The archive must hold exactly one
/// top-level folder (as the MovieLens archives do); the result names where it went.
pub fn fetch_url(url: &str, expected_sha256: &str, dir: &Path) -> Result<Fetched, FetchError> {
    fetch_url_with_progress(url, expected_sha256, dir, &mut |_| {})
}

/// [`fetch_url`], reporting progress to `progress`.
pub fn fetch_url_with_progress(
    url: &str,
    expected_sha256: &str,
    dir: &Path,
    progress: &mut dyn FnMut(FetchEvent),
) -> Result<Fetched, FetchError> {
    let expected = parse_digest(expected_sha256)?;
    std::fs::create_dir_all(dir).map_err(|source| io_error(dir, source))?;
    let staging = Staging::create(dir)?;

    let zip_path = staging.path.join("download.zip");
    let (actual, bytes) = download(url, &zip_path, progress)?;
    if actual != expected {
        return Err(FetchError::DigestMismatch {
            url: url.to_string(),
            expected,
            actual,
            bytes,
        });
    }

    progress(FetchEvent::Unpacking);
    let unpacked = staging.path.join("unpacked");
    let top = unpack(url, &zip_path, &unpacked)?;
    let target = dir.join(&top);
    if target.exists() {
        return Err(FetchError::AlreadyExists { path: target });
    }
    std::fs::rename(unpacked.join(&top), &target).map_err(|source| io_error(&target, source))?;
    drop(staging);
    Ok(Fetched {
        path: target,
        sha256: actual,
        bytes,
    })
}

/// Lowercase hex of a well-formed sha256 digest.
fn parse_digest(digest: &str) -> Result<String, FetchError> {
    let trimmed = digest.trim();
    if trimmed.len() == 64 && trimmed.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(trimmed.to_ascii_lowercase())
    } else {
        Err(FetchError::MalformedDigest {
            digest: digest.to_string(),
        })
    }
}

fn io_error(path: &Path, source: std::io::Error) -> FetchError {
    FetchError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A hidden folder beside the target (same file system, so the final rename is atomic), removed
/// with everything in it when dropped.
struct Staging {
    path: PathBuf,
}

impl Staging {
    fn create(dir: &Path) -> Result<Staging, FetchError> {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let path = dir.join(format!(".limaml-fetch-{}-{}", std::process::id(), n));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir(&path).map_err(|source| io_error(&path, source))?;
        Ok(Staging { path })
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Streams the body of `url` into `dest`, returning its sha256 (lowercase hex) and length.
fn download(
    url: &str,
    dest: &Path,
    progress: &mut dyn FnMut(FetchEvent),
) -> Result<(String, u64), FetchError> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .timeout_per_read(Some(Duration::from_secs(60)))
        .user_agent(concat!("limaml-data/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let request_error = |source: ureq::Error| FetchError::Request {
        url: url.to_string(),
        source: Box::new(source),
    };
    let mut response = agent.get(url).call().map_err(request_error)?;
    progress(FetchEvent::Started {
        total: response.body().content_length(),
    });

    let mut reader = response.body_mut().as_reader();
    let file = File::create(dest).map_err(|source| io_error(dest, source))?;
    let mut writer = BufWriter::new(file);
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 64 * 1024];
    let mut received = 0u64;
    loop {
        let n = match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(FetchError::Transfer {
                    url: url.to_string(),
                    received,
                    source,
                })
            }
        };
        hasher.update(&buffer[..n]);
        writer
            .write_all(&buffer[..n])
            .map_err(|source| io_error(dest, source))?;
        received += n as u64;
        progress(FetchEvent::Downloaded {
            downloaded: received,
        });
    }
    let file = writer
        .into_inner()
        .map_err(|error| io_error(dest, error.into_error()))?;
    file.sync_all().map_err(|source| io_error(dest, source))?;
    let digest: String = hasher
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    Ok((digest, received))
}

/// Unpacks the zip at `zip_path` into `into` (created), returning the archive's one top-level
/// folder name. Entries whose names would leave `into` are refused, not skipped.
fn unpack(url: &str, zip_path: &Path, into: &Path) -> Result<PathBuf, FetchError> {
    let bad = |reason: String| FetchError::BadArchive {
        url: url.to_string(),
        reason,
    };
    let file = File::open(zip_path).map_err(|source| io_error(zip_path, source))?;
    let mut archive = zip::ZipArchive::new(file).map_err(|error| bad(error.to_string()))?;
    std::fs::create_dir_all(into).map_err(|source| io_error(into, source))?;

    let mut top: Option<PathBuf> = None;
    for index in 0..archive.len() {
        let mut entry = archive
            .by_index(index)
            .map_err(|error| bad(error.to_string()))?;
        let display = entry
            .name()
            .map(|name| name.into_owned())
            .unwrap_or_default();
        let relative = entry.enclosed_name().ok_or_else(|| {
            bad(format!(
                "entry `{display}` would unpack outside the target folder"
            ))
        })?;
        let Some(first) = relative.components().next() else {
            continue; // the archive's root itself
        };
        let first = PathBuf::from(first.as_os_str());
        match &top {
            None => top = Some(first.clone()),
            Some(existing) if *existing != first => {
                return Err(bad(format!(
                    "expected one top-level folder, found `{}` and `{}`",
                    existing.display(),
                    first.display()
                )))
            }
            Some(_) => {}
        }
        if entry.is_symlink() {
            return Err(bad(format!("entry `{display}` is a symbolic link")));
        }
        let path = into.join(&relative);
        if entry.is_dir() {
            std::fs::create_dir_all(&path).map_err(|source| io_error(&path, source))?;
            continue;
        }
        if relative.components().count() < 2 {
            return Err(bad(format!(
                "expected one top-level folder, found the file `{display}`"
            )));
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| io_error(parent, source))?;
        }
        let mut out = File::create(&path).map_err(|source| io_error(&path, source))?;
        std::io::copy(&mut entry, &mut out).map_err(|error| {
            // A failed read is the archive's fault (bad deflate stream, CRC mismatch).
            if error.kind() == std::io::ErrorKind::InvalidData {
                bad(format!("entry `{display}`: {error}"))
            } else {
                io_error(&path, error)
            }
        })?;
    }
    top.ok_or_else(|| bad("the archive is empty".to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_accepted_in_either_case_and_rejected_when_malformed() {
        let upper = KNOWN[0].sha256.to_ascii_uppercase();
        assert_eq!(parse_digest(&upper).unwrap(), KNOWN[0].sha256);
        assert!(matches!(
            parse_digest("abc"),
            Err(FetchError::MalformedDigest { .. })
        ));
        assert!(matches!(
            parse_digest(&"g".repeat(64)),
            Err(FetchError::MalformedDigest { .. })
        ));
    }

    #[test]
    fn known_archives_pin_well_formed_digests_and_distinct_names() {
        for archive in KNOWN {
            assert_eq!(
                parse_digest(archive.sha256).unwrap(),
                archive.sha256,
                "{}",
                archive.name
            );
            assert!(archive.url.starts_with("https://files.grouplens.org/"));
        }
        let mut names = known_names();
        names.dedup();
        assert_eq!(names.len(), KNOWN.len());
    }
}
