//! `limaml data fetch`: download an official data set, check its sha256, unpack it.
//!
//! Owns the terminal side of a fetch: the download bar on stderr, the closing line on stdout, and
//! which failures are bad input (exit 2) and which are the environment's (exit 1). Must not
//! download, hash or unpack anything itself: that is `limaml_data::fetch`.

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use limaml_data::fetch::{self, FetchError, FetchEvent};

use super::Failure;

pub fn fetch_command(name: &str, dir: &Path, url: Option<&str>) -> Result<ExitCode, Failure> {
    let archive = fetch::lookup(name).map_err(failure)?;
    let source = url.unwrap_or(archive.url);

    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{bytes:>10}/{total_bytes:10} [{bar:30.cyan/blue}] {bytes_per_sec:>12} {eta}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar
    });
    let mut on_event = |event: FetchEvent| match (event, &bar) {
        (FetchEvent::Started { total }, bar) => {
            eprintln!("downloading {source}");
            if let Some(bar) = bar {
                bar.set_length(total.unwrap_or(archive.size));
            }
        }
        (FetchEvent::Downloaded { downloaded }, Some(bar)) => bar.set_position(downloaded),
        (FetchEvent::Unpacking, bar) => {
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            eprintln!("sha256 ok, unpacking");
        }
        (FetchEvent::Downloaded { .. }, None) => {}
    };
    let result = fetch::fetch_known(name, dir, url, &mut on_event);
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let fetched = result.map_err(failure)?;
    println!("{name}: unpacked to {} ({} bytes, sha256 {})", fetched.path.display(), fetched.bytes, fetched.sha256);
    Ok(ExitCode::SUCCESS)
}

/// Bad names, digests, archives and targets are the user's to fix (exit 2); a download that
/// failed or a folder that could not be written is the environment's (exit 1).
fn failure(error: FetchError) -> Failure {
    let message = error.to_string();
    match error {
        FetchError::UnknownName { .. }
        | FetchError::MalformedDigest { .. }
        | FetchError::AlreadyExists { .. }
        | FetchError::DigestMismatch { .. }
        | FetchError::BadArchive { .. } => Failure::BadInput(message),
        FetchError::Request { .. } | FetchError::Transfer { .. } | FetchError::Io { .. } => Failure::Failed(message),
    }
}
