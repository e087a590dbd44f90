//! The hostile-input corpus: malformed data files, specs and arguments, one row each. Every row
//! asserts the exit code, the `file:line` or key named, that nothing panicked, that stderr stays
//! small (bounded excerpts), and that the command ended within a time bound.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A command still running after this is killed and the case fails.
const TIME_BOUND: Duration = Duration::from_secs(20);
/// stderr larger than this means an error quoted input unbounded.
const MAX_STDERR_BYTES: usize = 16 * 1024;
/// The synthetic spec the spec cases change.
const BASE_SPEC: &str = include_str!("hostile/base.toml");

const USERS: usize = 40;
const ITEMS: usize = 25;
const RATINGS_PER_USER: usize = 12;
const GENRES: usize = 19;

/// The MovieLens spec the data cases run on.
const ML_SPEC: &str = r#"
[experiment]
name = "hostile-ml"
seeds = [1]

[data]
source = "movielens"
path = "ml"

[train]
epochs = 1

[methods.global]
kind = "global"
hidden = [8]
"#;

/// The CSV spec the CSV cases run on.
const CSV_SPEC: &str = r#"
[experiment]
name = "hostile-csv"
seeds = [1]

[data]
source = "csv"
path = "log.csv"

[data.csv]
label = "label"

[train]
epochs = 1

[methods.global]
kind = "global"
hidden = [8]
"#;

/// The `u.data` line of `user`'s `k`-th rating (both 1-based and 0-based as named).
fn rating_line(user: usize, k: usize) -> usize {
    (user - 1) * RATINGS_PER_USER + k + 1
}

fn u_user() -> String {
    (1..=USERS).map(|u| format!("{u}|{}|{}|occupation{}|{:05}\n", 18 + u, ["M", "F"][u % 2], u % 4, 10000 + u)).collect()
}

fn u_item() -> String {
    (1..=ITEMS)
        .map(|i| {
            let flags: Vec<&str> = (0..GENRES).map(|g| if g == i % GENRES { "1" } else { "0" }).collect();
            format!("{i}|Movie {i} (1995)|01-Jan-1995||http://example.org/{i}|{}\n", flags.join("|"))
        })
        .collect()
}

/// Every user rates `RATINGS_PER_USER` distinct items with stars 1..=5 (clicks and non-clicks).
fn u_data_rows() -> Vec<String> {
    let mut rows = Vec::new();
    for u in 1..=USERS {
        for k in 0..RATINGS_PER_USER {
            let item = (u + 2 * k) % ITEMS + 1;
            let stars = (u + 2 * k) % 5 + 1;
            rows.push(format!("{u}\t{item}\t{stars}\t{}", 880_000_000 + u * 1000 + k));
        }
    }
    rows
}

fn join_lines(rows: &[String]) -> String {
    rows.iter().map(|r| format!("{r}\n")).collect()
}

fn csv_rows() -> Vec<String> {
    let mut rows = vec!["user,item,label,timestamp".to_string()];
    for u in 1..=USERS {
        for k in 0..RATINGS_PER_USER {
            rows.push(format!("u{u},i{},{},{}", (u + 2 * k) % ITEMS, (u + k) % 2, u * 1000 + k));
        }
    }
    rows
}

/// A temporary folder with the base spec, a GroupLens folder `ml/` and a CSV log.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let fixture = Fixture { dir: tempfile::tempdir().expect("temp dir") };
        fixture.write("base.toml", BASE_SPEC);
        fixture.write("ml.toml", ML_SPEC);
        fixture.write("csv.toml", CSV_SPEC);
        fixture.write("ml/u.user", u_user());
        fixture.write("ml/u.item", u_item());
        fixture.write("ml/u.data", join_lines(&u_data_rows()));
        fixture.write("log.csv", join_lines(&csv_rows()));
        fixture
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, bytes: impl AsRef<[u8]>) {
        let path = self.path(name);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
        std::fs::write(path, bytes).expect("write fixture");
    }

    /// Replaces line `line` (1-based) of a fixture file.
    fn replace_line(&self, name: &str, line: usize, with: &[u8]) {
        let bytes = std::fs::read(self.path(name)).expect("read fixture");
        let mut lines: Vec<Vec<u8>> = bytes.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
        lines[line - 1] = with.to_vec();
        self.write(name, lines.join(&b'\n'));
    }

    /// The base spec with `from` replaced by `to` (which must occur).
    fn base_with(&self, name: &str, from: &str, to: &str) {
        assert!(BASE_SPEC.contains(from), "base.toml has no `{from}`");
        self.write(name, BASE_SPEC.replacen(from, to, 1));
    }
}

/// One hostile input: how to make it, the command, and what must come of it.
struct Case {
    name: &'static str,
    setup: Box<dyn Fn(&Fixture)>,
    args: Vec<String>,
    code: i32,
    /// Each must appear on stderr (the file:line, the key, the fix).
    stderr_has: Vec<String>,
}

fn case(name: &'static str, setup: impl Fn(&Fixture) + 'static, args: &[&str], code: i32, stderr_has: &[&str]) -> Case {
    Case {
        name,
        setup: Box::new(setup),
        args: args.iter().map(|a| a.to_string()).collect(),
        code,
        stderr_has: stderr_has.iter().map(|s| s.to_string()).collect(),
    }
}

const INSPECT_ML: &[&str] = &["data", "inspect", "ml.toml"];
const INSPECT_CSV: &[&str] = &["data", "inspect", "csv.toml"];
const PLAN_SPEC: &[&str] = &["plan", "spec.toml"];

fn data_cases() -> Vec<Case> {
    let line_5 = rating_line(1, 4);
    let u5 = format!("u.data:{line_5}");
    let u5: &'static str = Box::leak(u5.into_boxed_str());
    vec![
        case("rating of 99", |f| f.replace_line("ml/u.data", 5, b"1\t9\t99\t880001004"), INSPECT_ML, 2, &[u5, "rating 99 is outside"]),
        case("rating that is a word", |f| f.replace_line("ml/u.data", 5, b"1\t9\tfive\t880001004"), INSPECT_ML, 2, &[u5, "rating `five`"]),
        case("rating that is NaN", |f| f.replace_line("ml/u.data", 5, b"1\t9\tNaN\t880001004"), INSPECT_ML, 2, &[u5, "not a number"]),
        case("negative timestamp", |f| f.replace_line("ml/u.data", 5, b"1\t9\t3\t-5"), INSPECT_ML, 2, &[u5, "negative"]),
        case("timestamp that is a date", |f| f.replace_line("ml/u.data", 5, b"1\t9\t3\t2024-01-01"), INSPECT_ML, 2, &[u5, "timestamp"]),
        case("unknown user id", |f| f.replace_line("ml/u.data", 5, b"999\t9\t3\t880001004"), INSPECT_ML, 2, &[u5, "unknown user id `999`"]),
        case("unknown item id", |f| f.replace_line("ml/u.data", 5, b"1\t999\t3\t880001004"), INSPECT_ML, 2, &[u5, "unknown item id `999`"]),
        case("ratings row with three fields", |f| f.replace_line("ml/u.data", 5, b"1\t9\t3"), INSPECT_ML, 2, &[u5, "expected 4 fields"]),
        case("ratings row with comma separators", |f| f.replace_line("ml/u.data", 5, b"1,9,3,880001004"), INSPECT_ML, 2, &[u5, "found 1"]),
        case(
            "invalid bytes in an item id are reported at u.item's own line",
            |f| f.replace_line("ml/u.item", 10, &[&b"1\xff0"[..], &u_item().lines().nth(9).unwrap().as_bytes()[2..]].concat()),
            INSPECT_ML,
            2,
            &["u.item:10", "item id"],
        ),
        case(
            "user listed twice with other features",
            |f| f.write("ml/u.user", format!("{}3|70|F|doctor|99999\n", u_user())),
            INSPECT_ML,
            2,
            &[&format!("u.user:{}", USERS + 1), "listed again", "line 3"],
        ),
        case(
            "item listed twice with other fields",
            |f| f.write("ml/u.item", format!("{}{}", u_item(), u_item().lines().next().unwrap().replace("Movie 1", "Other"))),
            INSPECT_ML,
            2,
            &[&format!("u.item:{}", ITEMS + 1), "item id `1` is listed again"],
        ),
        case("user id that is not a number", |f| f.replace_line("ml/u.user", 2, b"two|30|M|writer|12345"), INSPECT_ML, 2, &["u.user:2", "user id `two`"]),
        case("user age that is not a number", |f| f.replace_line("ml/u.user", 2, b"2|old|M|writer|12345"), INSPECT_ML, 2, &["u.user:2", "age"]),
        case("user row with four fields", |f| f.replace_line("ml/u.user", 2, b"2|30|M|writer"), INSPECT_ML, 2, &["u.user:2", "expected 5"]),
        case(
            "genre flag of 2",
            |f| f.replace_line("ml/u.item", 3, u_item().lines().nth(2).unwrap().replacen("|0|", "|2|", 1).as_bytes()),
            INSPECT_ML,
            2,
            &["u.item:3", "genre flags"],
        ),
        case("item row with too few fields", |f| f.replace_line("ml/u.item", 3, b"3|Short (1995)"), INSPECT_ML, 2, &["u.item:3", "expected 24"]),
        case("malformed u.genre", |f| f.write("ml/u.genre", "Action|1\nDrama\n"), INSPECT_ML, 2, &["u.genre:2", "genre|index"]),
        case("empty u.data", |f| f.write("ml/u.data", "\n\n"), INSPECT_ML, 2, &["u.data", "is empty"]),
        case("missing u.user", |f| std::fs::remove_file(f.path("ml/u.user")).unwrap(), INSPECT_ML, 2, &["u.user"]),
        case(
            "a 10 MB ratings line is quoted as an excerpt",
            |f| f.replace_line("ml/u.data", 5, format!("1\t9\t{}\t1", "9".repeat(10 << 20)).as_bytes()),
            INSPECT_ML,
            2,
            &[u5, "bytes in all"],
        ),
        case(
            "every rating below the click threshold",
            |f| {
                let rows: Vec<String> = u_data_rows().iter().map(|r| { let p: Vec<&str> = r.split('\t').collect(); format!("{}\t{}\t2\t{}", p[0], p[1], p[3]) }).collect();
                f.write("ml/u.data", join_lines(&rows));
            },
            INSPECT_ML,
            2,
            &["cannot be used", "click_threshold"],
        ),
        case(
            "every rating a click",
            |f| {
                let rows: Vec<String> = u_data_rows().iter().map(|r| { let p: Vec<&str> = r.split('\t').collect(); format!("{}\t{}\t5\t{}", p[0], p[1], p[3]) }).collect();
                f.write("ml/u.data", join_lines(&rows));
            },
            INSPECT_ML,
            2,
            &["cannot be used", "every one"],
        ),
        case(
            "a single user gives no evaluable task",
            |f| f.write("ml/u.data", join_lines(&u_data_rows()[..RATINGS_PER_USER])),
            INSPECT_ML,
            2,
            &["no validation task", "split.validation_fraction = 0"],
        ),
        case(
            "a split that leaves no test task says why",
            |_| {},
            &["data", "inspect", "ml.toml", "--set", "split.setting=cold", "--set", "split.train_fraction=0.99", "--set", "split.validation_fraction=0"],
            2,
            &["no test task", "40 user entit(ies)"],
        ),
        case(
            "a missing data folder names the key and the fix",
            |f| std::fs::remove_dir_all(f.path("ml")).unwrap(),
            &["plan", "ml.toml"],
            2,
            &["ml.toml:8", "data.path", "limaml data fetch", "--set data.path="],
        ),
        case("a folder that is not MovieLens", |f| { std::fs::remove_file(f.path("ml/u.data")).unwrap(); }, INSPECT_ML, 2, &["not a MovieLens folder"]),
        case(
            "duplicated rows are a counted warning",
            |f| { let mut rows = u_data_rows(); rows.extend(u_data_rows()[..5].to_vec()); f.write("ml/u.data", join_lines(&rows)); },
            INSPECT_ML,
            0,
            &["warning: data: 5 row(s) repeat"],
        ),
        case(
            "a user without clicks is a counted warning",
            |f| {
                let rows: Vec<String> = u_data_rows().iter().map(|r| { let p: Vec<&str> = r.split('\t').collect(); if p[0] == "1" { format!("1\t{}\t1\t{}", p[1], p[3]) } else { r.clone() } }).collect();
                f.write("ml/u.data", join_lines(&rows));
            },
            INSPECT_ML,
            0,
            &["warning: data: 1 user(s) have no click"],
        ),
        case(
            "a user listed twice with the same features is accepted",
            |f| f.write("ml/u.user", format!("{}{}\n", u_user(), u_user().lines().nth(2).unwrap())),
            INSPECT_ML,
            0,
            &[],
        ),
        case(
            "bad rating in ML-1M ratings.dat",
            |f| {
                std::fs::remove_dir_all(f.path("ml")).unwrap();
                f.write("ml/users.dat", (1..=USERS).map(|u| format!("{u}::M::25::3::{:05}\n", u)).collect::<String>());
                f.write("ml/movies.dat", (1..=ITEMS).map(|i| format!("{i}::Movie {i} (1995)::Drama\n")).collect::<String>());
                let rows: Vec<String> = u_data_rows().iter().map(|r| r.replace('\t', "::")).collect();
                f.write("ml/ratings.dat", join_lines(&rows).replacen("::5::", "::7::", 1));
            },
            INSPECT_ML,
            2,
            &["ratings.dat:", "rating 7 is outside"],
        ),
        case("CSV label of 2", |f| f.replace_line("log.csv", 4, b"u1,i3,2,1002"), INSPECT_CSV, 2, &["log.csv:4", "label `2`"]),
        case("CSV label that is a word", |f| f.replace_line("log.csv", 4, b"u1,i3,maybe,1002"), INSPECT_CSV, 2, &["log.csv:4", "label `maybe`"]),
        case("CSV id that is not UTF-8", |f| f.replace_line("log.csv", 4, b"u\xff1,i3,1,1002"), INSPECT_CSV, 2, &["log.csv:4", "not valid UTF-8"]),
        case("CSV row with a missing field", |f| f.replace_line("log.csv", 4, b"u1,i3,1"), INSPECT_CSV, 2, &["log.csv:4", "expected 4 fields"]),
        case("CSV row with an empty user id", |f| f.replace_line("log.csv", 4, b",i3,1,1002"), INSPECT_CSV, 2, &["log.csv:4", "empty user or item id"]),
        case("CSV timestamp that is a word", |f| f.replace_line("log.csv", 4, b"u1,i3,1,noon"), INSPECT_CSV, 2, &["log.csv:4", "timestamp `noon`"]),
        case("CSV header without the label column", |f| f.replace_line("log.csv", 1, b"user,item,clicked,timestamp"), INSPECT_CSV, 2, &["log.csv", "no column named `label`"]),
        case(
            "a 10 MB CSV field is quoted as an excerpt",
            |f| f.replace_line("log.csv", 4, format!("u1,i3,{},1002", "x".repeat(10 << 20)).as_bytes()),
            INSPECT_CSV,
            2,
            &["log.csv:4", "bytes in all"],
        ),
        case("a missing CSV file names the key", |f| std::fs::remove_file(f.path("log.csv")).unwrap(), &["plan", "csv.toml"], 2, &["csv.toml:8", "data.path"]),
    ]
}

fn spec_cases() -> Vec<Case> {
    vec![
        case(
            "a string inner_steps is reported at its own line and key",
            |f| f.base_with("spec.toml", "meta_hidden = [8]", "meta_hidden = [8]\ninner_steps = \"3\""),
            PLAN_SPEC,
            2,
            &["spec.toml:26:1", "key `methods.limaml.inner_steps`", "inner_steps = \"3\""],
        ),
        case(
            "a negative inner_steps is reported at its own line and key",
            |f| f.base_with("spec.toml", "meta_hidden = [8]", "meta_hidden = [8]\ninner_steps = -1"),
            PLAN_SPEC,
            2,
            &["spec.toml:26:1", "key `methods.limaml.inner_steps`", "-1"],
        ),
        case("a negative seed", |f| f.base_with("spec.toml", "seeds = [1]", "seeds = [-1]"), PLAN_SPEC, 2, &["spec.toml:4:1", "experiment.seeds[0]"]),
        case(
            "an unknown method field with a suggestion",
            |f| f.base_with("spec.toml", "meta_hidden = [8]", "meta_hidden = [8]\ninner_stepz = 2"),
            PLAN_SPEC,
            2,
            &["spec.toml:26:1", "methods.limaml.inner_stepz", "did you mean `inner_steps`"],
        ),
        case("an unknown global field", |f| f.base_with("spec.toml", "hidden = [8]", "hidden = [8]\ndepth = 3"), PLAN_SPEC, 2, &["spec.toml:20:1", "methods.global.depth"]),
        case("an unknown table", |f| f.write("spec.toml", format!("{BASE_SPEC}\n[trian]\nepochs = 2\n")), PLAN_SPEC, 2, &["key `trian`", "did you mean `train`"]),
        case("an unknown method kind", |f| f.base_with("spec.toml", "kind = \"global\"", "kind = \"globall\""), PLAN_SPEC, 2, &["methods.global", "did you mean `global`"]),
        case("a method without a kind", |f| f.base_with("spec.toml", "kind = \"global\"\n", ""), PLAN_SPEC, 2, &["methods.global.kind", "missing field"]),
        case("a string epoch count", |f| f.base_with("spec.toml", "epochs = 1", "epochs = \"x\""), PLAN_SPEC, 2, &["spec.toml:15:1", "train.epochs"]),
        case(
            "an unknown train field is not doubled",
            |f| f.base_with("spec.toml", "epochs = 1", "epoch = 1"),
            PLAN_SPEC,
            2,
            &["spec.toml:15:1", "key `train.epoch`:", "did you mean `epochs`"],
        ),
        case(
            "independent errors are reported together",
            |f| {
                let text = BASE_SPEC.replace("seeds = [1]", "seeds = [-1]").replace("epochs = 1", "epochs = \"x\"");
                f.write("spec.toml", text.replace("meta_hidden = [8]", "meta_hidden = [8]\ninner_steps = -1"));
            },
            PLAN_SPEC,
            2,
            &["spec.toml:4:1", "spec.toml:15:1", "spec.toml:26:1", "(3 errors in the spec)"],
        ),
        case("a TOML syntax error", |f| f.base_with("spec.toml", "epochs = 1", "epochs = = 1"), PLAN_SPEC, 2, &["spec.toml:15:"]),
        case("a spec that is not UTF-8", |f| f.write("spec.toml", b"[experiment]\nname = \"\xff\"\n"), PLAN_SPEC, 2, &["spec.toml", "UTF-8"]),
        case("an empty experiment name", |f| f.base_with("spec.toml", "name = \"hostile\"", "name = \" \""), PLAN_SPEC, 2, &["spec.toml:3:1", "experiment.name"]),
        case("an unknown metric", |f| f.write("spec.toml", format!("{BASE_SPEC}\n[report]\nmetrics = [\"acu\"]\n")), PLAN_SPEC, 2, &["spec.toml:28:1", "report.metrics.0", "`auc`"]),
        case("a baseline that names no method", |f| f.write("spec.toml", format!("{BASE_SPEC}\n[report]\nbaseline = \"globl\"\n")), PLAN_SPEC, 2, &["report.baseline", "did you mean `global`"]),
        case("zero runtime jobs", |f| f.write("spec.toml", format!("{BASE_SPEC}\n[runtime]\njobs = 0\n")), PLAN_SPEC, 2, &["spec.toml:28:1", "runtime.jobs"]),
        case("a --set of a bad value names the command line", |_| {}, &["plan", "base.toml", "--set", "train.epochs=bad"], 2, &["command line (--set train.epochs=bad)", "train.epochs"]),
        case(
            "a --set of an unknown key is not doubled",
            |_| {},
            &["plan", "base.toml", "--set", "train.epoch=5"],
            2,
            &["command line (--set train.epoch=5)", "key `train.epoch`:"],
        ),
        case(
            "a --set inside a method table names the command line",
            |_| {},
            &["plan", "base.toml", "--set", "methods.limaml.inner_steps=x"],
            2,
            &["command line (--set methods.limaml.inner_steps=x)", "methods.limaml.inner_steps"],
        ),
        case("a --set without a value", |_| {}, &["plan", "base.toml", "--set", "train.epochs"], 2, &["command line", "KEY.PATH=VALUE"]),
        case("a --set with an empty key part", |_| {}, &["plan", "base.toml", "--set", "train..epochs=3"], 2, &["command line", "dotted key"]),
        case(
            "an unknown sweep path is reported at the sweep entry",
            |f| f.write("spec.toml", format!("{BASE_SPEC}\n[sweep]\n\"train.epoch\" = [1, 2]\n")),
            PLAN_SPEC,
            2,
            &["spec.toml:28:1", "key `sweep.train.epoch`", "did you mean `epochs`"],
        ),
        case(
            "a sweep over a misspelt method",
            |f| f.write("spec.toml", format!("{BASE_SPEC}\n[sweep]\n\"methods.limamll.inner_lr\" = [0.1, 0.2]\n")),
            PLAN_SPEC,
            2,
            &["spec.toml:28:1", "no such method", "did you mean `methods.limaml.inner_lr`"],
        ),
        case("a sweep entry that is not a list", |f| f.write("spec.toml", format!("{BASE_SPEC}\n[sweep]\n\"train.epochs\" = 3\n")), PLAN_SPEC, 2, &["spec.toml:28:1", "non-empty list"]),
        case(
            "a sweep of too many cells",
            |f| {
                let values = (1..=30).map(|v| v.to_string()).collect::<Vec<_>>().join(", ");
                f.write("spec.toml", format!("{BASE_SPEC}\n[sweep]\n\"train.epochs\" = [{values}]\n\"train.batch_size\" = [{values}]\n\"train.patience\" = [{values}]\n"));
            },
            PLAN_SPEC,
            2,
            &["key `sweep`", "27000 cells", "more than"],
        ),
        case(
            "too many seeds",
            |f| f.base_with("spec.toml", "seeds = [1]", &format!("seeds = [{}]", (0..2000).map(|s| s.to_string()).collect::<Vec<_>>().join(","))),
            PLAN_SPEC,
            2,
            &["spec.toml:4:1", "experiment.seeds", "lists 2000 seeds"],
        ),
        case(
            "a million seeds is a file too large to read",
            |f| f.base_with("spec.toml", "seeds = [1]", &format!("seeds = [{}]", (0..1_000_000).map(|s| s.to_string()).collect::<Vec<_>>().join(","))),
            PLAN_SPEC,
            2,
            &["spec.toml", "a spec file may have at most"],
        ),
        case(
            "a billion synthetic users is refused before generating",
            |f| f.base_with("spec.toml", "n_users = 60", "n_users = 1000000000"),
            PLAN_SPEC,
            2,
            &["spec.toml:10:1", "data.synthetic.n_users", "lower data.synthetic.n_users"],
        ),
        case("a spec with a 3 MB line shows an excerpt", |f| f.write("spec.toml", format!("{BASE_SPEC}\njunk = \"{}\"\n", "x".repeat(3 << 20))), PLAN_SPEC, 2, &["spec.toml:27:1", "key `methods.limaml.junk`", "bytes in all"]),
        case(
            "an include cycle",
            |f| {
                f.write("a.toml", "include = [\"b.toml\"]\n");
                f.write("b.toml", "include = [\"a.toml\"]\n");
            },
            &["plan", "a.toml"],
            2,
            &["b.toml:1:1", "include cycle"],
        ),
        case(
            "a chain of 50 includes is refused, not a stack overflow",
            |f| {
                for i in 0..50 {
                    f.write(&format!("c{i}.toml"), format!("include = [\"c{}.toml\"]\n", i + 1));
                }
                f.write("c50.toml", BASE_SPEC);
            },
            &["plan", "c0.toml"],
            2,
            &["include", "nest deeper than 32"],
        ),
        case(
            "a diamond of 30 levels reads each file once",
            |f| {
                for i in 0..30 {
                    f.write(&format!("d{i}.toml"), format!("include = [\"d{0}.toml\", \"d{0}.toml\"]\n", i + 1));
                }
                f.write("d30.toml", BASE_SPEC);
            },
            &["plan", "d0.toml"],
            0,
            &[],
        ),
        case(
            "more than 256 distinct included files",
            |f| {
                let names: Vec<String> = (0..300).map(|i| format!("\"w{i}.toml\"")).collect();
                for i in 0..300 {
                    f.write(&format!("w{i}.toml"), format!("[experiment]\ndescription = \"{i}\"\n"));
                }
                f.write("spec.toml", format!("include = [{}]\n{BASE_SPEC}", names.join(", ")));
            },
            PLAN_SPEC,
            2,
            &["spec.toml:1:1", "more than 256 files"],
        ),
        case(
            "an include naming a FIFO is refused, not a hang",
            |f| {
                let fifo = f.path("fifo.toml");
                let status = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo runs");
                assert!(status.success());
                f.write("spec.toml", format!("include = [\"fifo.toml\"]\n{BASE_SPEC}"));
            },
            PLAN_SPEC,
            2,
            &["spec.toml:1:1", "not a regular file"],
        ),
        case(
            "an include of /dev/zero is refused",
            |f| f.write("spec.toml", format!("include = [\"/dev/zero\"]\n{BASE_SPEC}")),
            PLAN_SPEC,
            2,
            &["spec.toml:1:1", "not a regular file"],
        ),
        case("an include of a missing file", |f| f.write("spec.toml", format!("include = [\"nope.toml\"]\n{BASE_SPEC}")), PLAN_SPEC, 2, &["spec.toml:1:1", "nope.toml", "cannot read"]),
        case("an include that is not a list", |f| f.write("spec.toml", format!("include = 3\n{BASE_SPEC}")), PLAN_SPEC, 2, &["spec.toml:1:1", "list of file paths"]),
        case("a spec path that is a folder", |f| std::fs::create_dir(f.path("folder.toml")).unwrap(), &["plan", "folder.toml"], 2, &["folder.toml", "not a regular file"]),
        case("a spec path that does not exist", |_| {}, &["plan", "missing.toml"], 2, &["missing.toml", "cannot read"]),
        case("the spec is /dev/zero", |_| {}, &["plan", "/dev/zero"], 2, &["/dev/zero", "not a regular file"]),
    ]
}

fn argument_cases() -> Vec<Case> {
    vec![
        case("-j 100000 is refused", |_| {}, &["run", "base.toml", "-j", "100000"], 2, &["-j 100000", "use -j"]),
        case("-j 0 is refused", |_| {}, &["run", "base.toml", "-j", "0"], 2, &["-j must be at least 1"]),
        case("-j that is not a number", |_| {}, &["run", "base.toml", "-j", "many"], 2, &["invalid value 'many'"]),
        case("--store that is a file", |f| f.write("afile", ""), &["--store", "afile", "plan", "base.toml"], 2, &["--store afile", "not a folder"]),
        case("--store under a file", |f| f.write("afile", ""), &["--store", "afile/store", "runs"], 2, &["--store afile/store"]),
        case("--store in /proc", |_| {}, &["--store", "/proc/limaml-store", "runs"], 2, &["--store /proc/limaml-store"]),
        case("--store that is /proc itself", |_| {}, &["--store", "/proc", "runs"], 2, &["--store /proc", "not writable"]),
        case("show of a run that does not exist", |_| {}, &["show", "nope"], 2, &["no run nope"]),
        case("an unknown subcommand", |_| {}, &["rnu", "base.toml"], 2, &["unrecognized subcommand"]),
        case("an unknown data set to fetch", |_| {}, &["data", "fetch", "movielens-99k"], 2, &["movielens-99k"]),
    ]
}

/// Runs one case in a fresh fixture; a description of what went wrong, if anything did.
fn check(case: &Case) -> Option<String> {
    let fixture = Fixture::new();
    (case.setup)(&fixture);
    let (stdout_path, stderr_path) = (fixture.path("stdout.txt"), fixture.path("stderr.txt"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_limaml"))
        .current_dir(fixture.dir.path())
        .env("LIMAML_STORE", fixture.path("store"))
        .env_remove("RUST_LOG")
        .env_remove("RUST_BACKTRACE")
        // The fixtures are the data: a real MovieLens folder named by the environment (as CI
        // sets it) must not stand in for a missing one.
        .env_remove("LIMAML_DATA")
        .args(&case.args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).expect("stdout file"))
        .stderr(std::fs::File::create(&stderr_path).expect("stderr file"))
        .spawn()
        .expect("limaml starts");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > TIME_BOUND {
            let _ = child.kill();
            let _ = child.wait();
            return Some(format!("still running after {TIME_BOUND:?}; killed"));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let stderr = String::from_utf8_lossy(&std::fs::read(&stderr_path).unwrap_or_default()).to_string();
    let shown: String = stderr.chars().take(2000).collect();
    let mut problems = String::new();
    if status.code() != Some(case.code) {
        let _ = write!(problems, "exit {:?}, expected {}; ", status.code(), case.code);
    }
    if stderr.contains("panicked") || stderr.contains("RUST_BACKTRACE") {
        problems.push_str("panicked; ");
    }
    if stderr.len() > MAX_STDERR_BYTES {
        let _ = write!(problems, "stderr has {} bytes; ", stderr.len());
    }
    for expected in &case.stderr_has {
        if !stderr.contains(expected.as_str()) {
            let _ = write!(problems, "stderr lacks `{expected}`; ");
        }
    }
    (!problems.is_empty()).then(|| format!("{problems}\n    stderr: {shown}"))
}

fn all_cases() -> Vec<Case> {
    let mut cases = data_cases();
    cases.extend(spec_cases());
    cases.extend(argument_cases());
    cases
}

#[test]
fn the_corpus_holds_at_least_sixty_hostile_inputs_with_distinct_names() {
    let cases = all_cases();
    let names: std::collections::BTreeSet<&str> = cases.iter().map(|c| c.name).collect();
    assert_eq!(names.len(), cases.len(), "case names repeat");
    assert!(cases.len() >= 60, "only {} cases", cases.len());
}

#[test]
fn every_hostile_input_gets_a_clear_error_in_bounded_time_without_a_panic() {
    let cases = all_cases();
    let failures: Vec<String> =
        cases.iter().filter_map(|case| check(case).map(|problem| format!("{}: {problem}", case.name))).collect();
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

/// Runs `limaml ARGS` in the fixture with its store; (exit code, stdout, stderr).
fn limaml(fixture: &Fixture, args: &[&str]) -> (Option<i32>, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_limaml"))
        .current_dir(fixture.dir.path())
        .env("LIMAML_STORE", fixture.path("store"))
        .env_remove("RUST_LOG")
        .args(args)
        .output()
        .expect("limaml runs");
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).to_string();
    (output.status.code(), text(&output.stdout), text(&output.stderr))
}

/// Flips bytes all through `path`.
fn scramble(path: &std::path::Path) {
    let mut bytes = std::fs::read(path).expect("read");
    for i in (0..bytes.len()).step_by(7) {
        bytes[i] ^= 0x5a;
    }
    std::fs::write(path, bytes).expect("write");
}

#[test]
fn the_run_summary_shows_the_data_warnings() {
    let fixture = Fixture::new();
    let mut rows = u_data_rows();
    rows.extend(u_data_rows()[..3].to_vec());
    fixture.write("ml/u.data", join_lines(&rows));
    let (code, stdout, stderr) = limaml(&fixture, &["run", "ml.toml"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("warning: data: 3 row(s) repeat"), "{stdout}");
    let (_, json, _) = limaml(&fixture, &["run", "ml.toml", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(json["data_warnings"][0]["name"], "duplicate_rows");
    assert_eq!(json["data_warnings"][0]["count"], 3);
}

#[test]
fn store_check_verifies_artifacts_and_names_a_corrupted_one() {
    let fixture = Fixture::new();
    assert_eq!(limaml(&fixture, &["run", "base.toml"]).0, Some(0));
    let (code, stdout, _) = limaml(&fixture, &["store", "check"]);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.contains(" 0 problem(s)"), "{stdout}");
    let object = walk_files(&fixture.path("store/objects")).into_iter().next().expect("an artifact");
    scramble(&object);
    let (code, stdout, _) = limaml(&fixture, &["store", "check"]);
    assert_eq!(code, Some(1), "{stdout}");
    assert!(stdout.contains("1 problem(s)") && stdout.contains("corrupted"), "{stdout}");
}

#[test]
fn a_damaged_database_names_the_recovery_and_recover_rebuilds_it() {
    let fixture = Fixture::new();
    assert_eq!(limaml(&fixture, &["run", "base.toml"]).0, Some(0));
    std::fs::write(fixture.path("store/db/conf"), b"garbage\x00\xff").expect("damage the database");
    let (code, _, stderr) = limaml(&fixture, &["runs"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("store recover") && !stderr.contains("panicked"), "{stderr}");
    let (code, stdout, stderr) = limaml(&fixture, &["store", "recover"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("moved the old database to") && stdout.contains("1 run record(s)"), "{stdout}");
    let (code, stdout, stderr) = limaml(&fixture, &["run", "base.toml"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("0 executed"), "every stage is cached again: {stdout}");
}

fn walk_files(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk_files(&path));
        } else {
            files.push(path);
        }
    }
    files.sort();
    files
}
