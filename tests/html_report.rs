//! The HTML report: one self-contained page with every table and plot, checked in a real
//! browser (headless Chromium: its DOM after rendering, and a screenshot).

mod common;
use common::{stderr, stdout, Workspace, TINY_SPEC};

fn headless(browser: &str, profile: &std::path::Path) -> std::process::Command {
    let mut command = std::process::Command::new(browser);
    command.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        &format!("--user-data-dir={}", profile.display()),
    ]);
    command
}

#[test]
fn the_report_page_renders_every_table_and_plot_in_a_browser() {
    if !common::required_tool("chromium") {
        return;
    }
    let browser = "chromium";
    let ws = Workspace::new();
    ws.write("two.toml", &TINY_SPEC.replace("seeds = [1]", "seeds = [1, 2]"));
    ws.run_json("two.toml", &[]);
    let out = ws.path().join("report");
    let output = ws.run(&["report", "last", "--out", out.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let page = out.join("index.html");
    let html = std::fs::read_to_string(&page).unwrap();
    for external in ["<script", "<link", "src=\"http", "href=\"http", "@import"] {
        assert!(!html.contains(external), "self-contained, yet has {external}");
    }
    let profile = ws.path().join("chromium-profile");
    let dom = headless(browser, &profile).args(["--dump-dom", &format!("file://{}", page.display())]).output().unwrap();
    let dom = stdout(&dom);
    assert_eq!(dom.matches("<table").count(), 3, "comparison, ranking and per-user tests");
    assert!(dom.matches("<svg").count() >= 2, "the segment and learning-curve plots");
    assert!(dom.contains("<td>limaml</td>") && dom.contains("<td>global</td>"), "method rows");
    let shot = ws.path().join("page.png");
    let status = headless(browser, &profile)
        .args([&format!("--screenshot={}", shot.display()), "--window-size=1200,2000", &format!("file://{}", page.display())])
        .output()
        .unwrap();
    assert!(status.status.success(), "{}", stderr(&status));
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 20_000, "a non-blank screenshot: {} bytes", png.len());
}
