//! `limaml data fetch`: download an official data set, check its sha256, unpack it.

use std::path::Path;
use std::process::ExitCode;

use super::Failure;

pub fn fetch_command(_name: &str, _dir: &Path, _url: Option<&str>) -> Result<ExitCode, Failure> {
    Err(Failure::BadInput("limaml data fetch is not available in this build yet".into()))
}
