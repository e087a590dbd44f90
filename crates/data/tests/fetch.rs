//! `limaml data fetch` against zips built here and served on 127.0.0.1 by a tiny HTTP server
//! thread (this machine cannot reach GroupLens): digest checking, unpacking, refusals, and that a
//! failed fetch leaves nothing half-unpacked behind.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use limaml_data::fetch::{self, FetchError, FetchEvent};
use sha2::{Digest, Sha256};

/// A zip of `entries` (name, content), deflated; names ending in `/` are folders.
fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, content) in entries {
        if name.ends_with('/') {
            writer.add_directory(*name, options).unwrap();
        } else {
            writer.start_file(*name, options).unwrap();
            writer.write_all(content).unwrap();
        }
    }
    writer.finish().unwrap().into_inner()
}

/// A small archive shaped like ml-100k.zip: one top-level folder holding the data files.
fn movielens_like_zip(folder: &str) -> Vec<u8> {
    let data = b"196\t242\t3\t881250949\n186\t302\t3\t891717742\n";
    let item = b"1|Toy Story (1995)|01-Jan-1995||http://x|0|0|0|1|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0\n";
    zip_of(&[
        (&format!("{folder}/"), b""),
        (&format!("{folder}/u.data"), data),
        (&format!("{folder}/u.item"), item),
        (&format!("{folder}/README"), b"a test archive\n"),
    ])
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Serves `body` at `/archive.zip` (anything else is a 404) for at most `max_requests` requests
/// or 20 seconds, whichever comes first, then stops by itself. Returns the base URL.
fn serve(body: Vec<u8>, max_requests: usize) -> (String, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut served = 0;
        while served < max_requests && Instant::now() < deadline {
            match listener.accept() {
                Ok((stream, _)) => {
                    served += 1;
                    let _ = answer(stream, &body);
                }
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => break,
            }
        }
    });
    (base, handle)
}

fn answer(mut stream: TcpStream, body: &[u8]) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut request = Vec::new();
    let mut buffer = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 64 * 1024 {
        let n = stream.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        request.extend_from_slice(&buffer[..n]);
    }
    let request = String::from_utf8_lossy(&request);
    let path = request.split_whitespace().nth(1).unwrap_or("");
    let (status, body): (&str, &[u8]) = if path == "/archive.zip" {
        ("200 OK", body)
    } else {
        ("404 Not Found", b"not found")
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: application/zip\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    stream.write_all(body)?;
    stream.flush()
}

/// The names in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_served_zip_whose_digest_matches_is_unpacked_into_the_folder() {
    let zip = movielens_like_zip("ml-100k");
    let digest = sha256_hex(&zip);
    let (base, server) = serve(zip.clone(), 1);
    let dir = common::scratch_dir("fetch-ok");

    let fetched = fetch::fetch_url(&format!("{base}/archive.zip"), &digest, &dir).unwrap();
    server.join().unwrap();

    assert_eq!(fetched.path, dir.join("ml-100k"));
    assert_eq!(fetched.sha256, digest);
    assert_eq!(fetched.bytes, zip.len() as u64);
    let data = std::fs::read_to_string(dir.join("ml-100k/u.data")).unwrap();
    assert!(data.starts_with("196\t242\t3\t881250949\n"));
    assert!(dir.join("ml-100k/u.item").is_file());
    assert!(dir.join("ml-100k/README").is_file());
    assert_eq!(
        listing(&dir),
        vec!["ml-100k"],
        "the staging folder must be gone"
    );
}

#[test]
fn the_unpacked_folder_loads_as_movielens() {
    let zip = movielens_like_zip("ml-100k");
    let digest = sha256_hex(&zip);
    let (base, server) = serve(zip, 1);
    let dir = common::scratch_dir("fetch-load");

    let fetched = fetch::fetch_url(&format!("{base}/archive.zip"), &digest, &dir).unwrap();
    server.join().unwrap();

    let files = limaml_data::movielens::source_files(&fetched.path).unwrap();
    assert!(files.iter().any(|file| file.ends_with("u.data")));
}

#[test]
fn a_digest_is_accepted_in_upper_case() {
    let zip = movielens_like_zip("ml-1m");
    let digest = sha256_hex(&zip).to_ascii_uppercase();
    let (base, server) = serve(zip, 1);
    let dir = common::scratch_dir("fetch-upper");

    let fetched = fetch::fetch_url(&format!("{base}/archive.zip"), &digest, &dir).unwrap();
    server.join().unwrap();
    assert_eq!(fetched.path, dir.join("ml-1m"));
}

#[test]
fn a_wrong_digest_is_an_error_and_leaves_nothing_behind() {
    let zip = movielens_like_zip("ml-100k");
    let wrong = sha256_hex(b"something else");
    let (base, server) = serve(zip.clone(), 1);
    let dir = common::scratch_dir("fetch-mismatch");

    let error = fetch::fetch_url(&format!("{base}/archive.zip"), &wrong, &dir).unwrap_err();
    server.join().unwrap();

    match &error {
        FetchError::DigestMismatch {
            expected,
            actual,
            bytes,
            ..
        } => {
            assert_eq!(expected, &wrong);
            assert_eq!(actual, &sha256_hex(&zip));
            assert_eq!(*bytes, zip.len() as u64);
        }
        other => panic!("expected a digest mismatch, got {other:?}"),
    }
    assert!(error.to_string().contains("sha256 mismatch"), "{error}");
    assert!(listing(&dir).is_empty(), "left behind: {:?}", listing(&dir));
}

#[test]
fn a_url_override_still_has_to_match_the_official_digest() {
    let (base, server) = serve(movielens_like_zip("ml-100k"), 1);
    let dir = common::scratch_dir("fetch-override");

    let url = format!("{base}/archive.zip");
    let error = fetch::fetch_known("movielens-100k", &dir, Some(&url), &mut |_| {}).unwrap_err();
    server.join().unwrap();

    match &error {
        FetchError::DigestMismatch { expected, .. } => {
            assert_eq!(expected, fetch::lookup("movielens-100k").unwrap().sha256)
        }
        other => panic!("expected a digest mismatch, got {other:?}"),
    }
    assert!(listing(&dir).is_empty(), "left behind: {:?}", listing(&dir));
}

#[test]
fn an_unknown_name_is_an_error_listing_the_known_names() {
    let dir = common::scratch_dir("fetch-unknown");
    let error = fetch::fetch_known("movielens-10m", &dir, None, &mut |_| {}).unwrap_err();

    match &error {
        FetchError::UnknownName { name, known } => {
            assert_eq!(name, "movielens-10m");
            assert_eq!(known, &vec!["movielens-100k", "movielens-1m"]);
        }
        other => panic!("expected an unknown name, got {other:?}"),
    }
    let message = error.to_string();
    assert!(message.contains("movielens-10m"), "{message}");
    assert!(
        message.contains("movielens-100k, movielens-1m"),
        "{message}"
    );
}

#[test]
fn a_malformed_digest_is_refused_before_anything_is_downloaded() {
    let dir = common::scratch_dir("fetch-malformed");
    // Nothing listens on this URL; a download attempt would fail differently.
    let error =
        fetch::fetch_url("http://127.0.0.1:9/archive.zip", "not-a-digest", &dir).unwrap_err();
    assert!(
        matches!(error, FetchError::MalformedDigest { .. }),
        "{error:?}"
    );
    assert!(listing(&dir).is_empty());
}

#[test]
fn an_existing_target_folder_is_refused_before_downloading() {
    let dir = common::scratch_dir("fetch-exists");
    std::fs::create_dir(dir.join("ml-100k")).unwrap();
    common::write(&dir.join("ml-100k"), "u.data", b"mine\n");

    // No URL override and no network: the refusal must come before any download.
    let error = fetch::fetch_known("movielens-100k", &dir, None, &mut |_| {}).unwrap_err();
    assert!(
        matches!(error, FetchError::AlreadyExists { .. }),
        "{error:?}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("ml-100k/u.data")).unwrap(),
        "mine\n"
    );
}

#[test]
fn an_existing_target_folder_is_not_overwritten_by_fetch_url() {
    let zip = movielens_like_zip("ml-100k");
    let digest = sha256_hex(&zip);
    let (base, server) = serve(zip, 1);
    let dir = common::scratch_dir("fetch-exists-url");
    std::fs::create_dir(dir.join("ml-100k")).unwrap();
    common::write(&dir.join("ml-100k"), "u.data", b"mine\n");

    let error = fetch::fetch_url(&format!("{base}/archive.zip"), &digest, &dir).unwrap_err();
    server.join().unwrap();

    assert!(
        matches!(error, FetchError::AlreadyExists { .. }),
        "{error:?}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("ml-100k/u.data")).unwrap(),
        "mine\n"
    );
    assert_eq!(listing(&dir), vec!["ml-100k"]);
}

#[test]
fn an_http_error_status_is_a_request_error() {
    let (base, server) = serve(Vec::new(), 1);
    let dir = common::scratch_dir("fetch-404");

    let digest = sha256_hex(b"");
    let error = fetch::fetch_url(&format!("{base}/missing.zip"), &digest, &dir).unwrap_err();
    server.join().unwrap();

    assert!(matches!(error, FetchError::Request { .. }), "{error:?}");
    assert!(error.to_string().contains("404"), "{error}");
    assert!(listing(&dir).is_empty());
}

#[test]
fn an_unreachable_server_is_a_request_error() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    }; // closed again: connections are refused
    let dir = common::scratch_dir("fetch-refused");

    let digest = sha256_hex(b"");
    let error = fetch::fetch_url(
        &format!("http://127.0.0.1:{port}/archive.zip"),
        &digest,
        &dir,
    )
    .unwrap_err();
    assert!(matches!(error, FetchError::Request { .. }), "{error:?}");
    assert!(listing(&dir).is_empty());
}

#[test]
fn an_entry_that_would_unpack_outside_the_folder_is_refused() {
    let zip = zip_of(&[
        ("ml-100k/u.data", b"1\t2\t3\t4\n"),
        ("ml-100k/../../evil.txt", b"x"),
    ]);
    let digest = sha256_hex(&zip);
    let (base, server) = serve(zip, 1);
    let root = common::scratch_dir("fetch-escape");
    let dir = root.join("inner");

    let error = fetch::fetch_url(&format!("{base}/archive.zip"), &digest, &dir).unwrap_err();
    server.join().unwrap();

    assert!(matches!(error, FetchError::BadArchive { .. }), "{error:?}");
    assert!(listing(&dir).is_empty(), "left behind: {:?}", listing(&dir));
    assert_eq!(listing(&root), vec!["inner"]);
}

#[test]
fn an_archive_without_a_single_top_level_folder_is_refused() {
    let zip = zip_of(&[("ml-100k/u.data", b"1\t2\t3\t4\n"), ("other/u.item", b"x")]);
    let digest = sha256_hex(&zip);
    let (base, server) = serve(zip, 1);
    let dir = common::scratch_dir("fetch-two-tops");

    let error = fetch::fetch_url(&format!("{base}/archive.zip"), &digest, &dir).unwrap_err();
    server.join().unwrap();

    assert!(matches!(error, FetchError::BadArchive { .. }), "{error:?}");
    assert!(
        error.to_string().contains("one top-level folder"),
        "{error}"
    );
    assert!(listing(&dir).is_empty(), "left behind: {:?}", listing(&dir));
}

#[test]
fn a_body_that_is_not_a_zip_is_a_bad_archive_error() {
    let body = b"<html>a captive portal</html>".to_vec();
    let digest = sha256_hex(&body);
    let (base, server) = serve(body, 1);
    let dir = common::scratch_dir("fetch-not-zip");

    let error = fetch::fetch_url(&format!("{base}/archive.zip"), &digest, &dir).unwrap_err();
    server.join().unwrap();

    assert!(matches!(error, FetchError::BadArchive { .. }), "{error:?}");
    assert!(listing(&dir).is_empty());
}

#[test]
fn progress_reports_the_total_every_byte_and_then_unpacking() {
    let zip = movielens_like_zip("ml-100k");
    let digest = sha256_hex(&zip);
    let (base, server) = serve(zip.clone(), 1);
    let dir = common::scratch_dir("fetch-progress");

    let mut events = Vec::new();
    fetch::fetch_url_with_progress(
        &format!("{base}/archive.zip"),
        &digest,
        &dir,
        &mut |event| events.push(event),
    )
    .unwrap();
    server.join().unwrap();

    let total = zip.len() as u64;
    assert_eq!(
        events.first(),
        Some(&FetchEvent::Started { total: Some(total) })
    );
    assert_eq!(events.last(), Some(&FetchEvent::Unpacking));
    let downloaded: Vec<u64> = events
        .iter()
        .filter_map(|event| match event {
            FetchEvent::Downloaded { downloaded } => Some(*downloaded),
            _ => None,
        })
        .collect();
    assert!(downloaded.windows(2).all(|w| w[0] < w[1]), "{downloaded:?}");
    assert_eq!(downloaded.last(), Some(&total));
}

#[test]
fn the_target_folder_is_created_when_missing() {
    let zip = movielens_like_zip("ml-100k");
    let digest = sha256_hex(&zip);
    let (base, server) = serve(zip, 1);
    let dir = common::scratch_dir("fetch-create").join("a/b");

    let fetched = fetch::fetch_url(&format!("{base}/archive.zip"), &digest, &dir).unwrap();
    server.join().unwrap();
    assert!(fetched.path.join("u.data").is_file());
}
