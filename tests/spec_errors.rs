//! Bad specs are errors that name the file, line and key, suggest near misses, and exit 2.

mod common;
use common::{stderr, Workspace};

#[test]
fn an_unknown_key_names_file_line_and_suggests_the_near_miss() {
    let ws = Workspace::new();
    ws.write("bad.toml", "[experiment]\nname = \"x\"\n\n[methods.limaml]\nkind = \"limaml\"\ninner_lrr = 0.1\n");
    let output = ws.run(&["plan", "bad.toml"]);
    assert_eq!(output.status.code(), Some(2));
    let text = stderr(&output);
    assert!(text.contains("bad.toml:6:1"), "{text}");
    assert!(text.contains("methods.limaml.inner_lrr"), "{text}");
    assert!(text.contains("did you mean `inner_lr`"), "{text}");
}

#[test]
fn a_wrong_type_names_the_key_and_its_line() {
    let ws = Workspace::new();
    ws.write("bad.toml", "[experiment]\nname = \"x\"\n\n[train]\nepochs = \"many\"\n\n[methods.g]\nkind = \"global\"\n");
    let output = ws.run(&["plan", "bad.toml"]);
    assert_eq!(output.status.code(), Some(2));
    let text = stderr(&output);
    assert!(text.contains("bad.toml:5:1"), "{text}");
    assert!(text.contains("train.epochs"), "{text}");
}

#[test]
fn an_out_of_range_value_is_rejected_with_its_line() {
    let ws = Workspace::new();
    ws.write("bad.toml", "[experiment]\nname = \"x\"\n\n[split]\nquery_fraction = 1.5\n\n[methods.g]\nkind = \"global\"\n");
    let output = ws.run(&["plan", "bad.toml"]);
    assert_eq!(output.status.code(), Some(2));
    let text = stderr(&output);
    assert!(text.contains("bad.toml:5:1"), "{text}");
    assert!(text.contains("split.query_fraction"), "{text}");
}

#[test]
fn an_unknown_method_kind_suggests_the_right_one() {
    let ws = Workspace::new();
    ws.write("bad.toml", "[experiment]\nname = \"x\"\n\n[methods.m]\nkind = \"limamll\"\n");
    let output = ws.run(&["plan", "bad.toml"]);
    assert_eq!(output.status.code(), Some(2));
    let text = stderr(&output);
    assert!(text.contains("bad.toml:"), "{text}");
    assert!(text.contains("did you mean `limaml`"), "{text}");
}

#[test]
fn a_syntax_error_points_at_its_line_and_column() {
    let ws = Workspace::new();
    ws.write("bad.toml", "[experiment]\nname = \"x\"\nseeds = [1, 2\n");
    let output = ws.run(&["plan", "bad.toml"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("bad.toml:"), "{}", stderr(&output));
}

#[test]
fn an_error_in_an_included_file_names_that_file() {
    let ws = Workspace::new();
    ws.write("base.toml", "[train]\nepochz = 3\n");
    ws.write("main.toml", "include = [\"base.toml\"]\n[experiment]\nname = \"x\"\n[methods.g]\nkind = \"global\"\n");
    let output = ws.run(&["plan", "main.toml"]);
    assert_eq!(output.status.code(), Some(2));
    let text = stderr(&output);
    assert!(text.contains("base.toml:2:1"), "{text}");
    assert!(text.contains("did you mean `epochs`"), "{text}");
}

#[test]
fn a_bad_override_names_the_command_line() {
    let ws = Workspace::new();
    let output = ws.run(&["plan", "tiny.toml", "--set", "train.epocs=3"]);
    assert_eq!(output.status.code(), Some(2));
    let text = stderr(&output);
    assert!(text.contains("--set train.epocs=3"), "{text}");
    assert!(text.contains("did you mean `epochs`"), "{text}");
}

#[test]
fn later_files_override_included_keys() {
    let ws = Workspace::new();
    ws.write("base.toml", "[experiment]\nname = \"base\"\n[train]\nepochs = 3\n[methods.g]\nkind = \"global\"\n");
    ws.write("main.toml", "include = [\"base.toml\"]\n[experiment]\nname = \"main\"\n");
    let output = ws.run(&["plan", "main.toml"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(common::stdout(&output).contains("experiment main"));
}

#[test]
fn a_missing_spec_file_is_bad_input() {
    let ws = Workspace::new();
    let output = ws.run(&["plan", "nope.toml"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("nope.toml"));
}
