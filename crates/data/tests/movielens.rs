//! MovieLens loaders: the real ML-100K, and ML-1M on small files written by the tests.

mod common;

use std::path::Path;

use limaml_data::{load, source_files, BadRowPolicy, DataConfig, DataError, DataSource};

fn movielens_config(path: &Path) -> DataConfig {
    DataConfig {
        source: DataSource::Movielens,
        path: Some(path.to_string_lossy().into_owned()),
        ..Default::default()
    }
}

#[test]
fn ml_100k_loads_100000_ratings_943_users_1682_items() {
    let Some(dir) = common::ml100k_dir() else {
        return;
    };
    let dataset = load(&movielens_config(&dir), Path::new("/")).unwrap();
    assert_eq!(dataset.name, "movielens-100k");
    assert_eq!(dataset.interactions.len(), 100_000);
    assert_eq!(dataset.users.count, 943);
    assert_eq!(dataset.items.count, 1682);
    assert_eq!(dataset.dropped_rows, 0);
}

#[test]
fn ml_100k_labels_are_ratings_at_or_above_the_threshold() {
    let Some(dir) = common::ml100k_dir() else {
        return;
    };
    let dataset = load(&movielens_config(&dir), Path::new("/")).unwrap();
    let positives = dataset
        .interactions
        .label
        .iter()
        .filter(|&&l| l == 1.0)
        .count();
    // The README: 55.4% of ratings are >= 4.
    assert!(
        (positives as f64 / 100_000.0 - 0.554).abs() < 0.001,
        "{positives}"
    );
}

#[test]
fn ml_100k_has_user_and_item_features() {
    let Some(dir) = common::ml100k_dir() else {
        return;
    };
    let dataset = load(&movielens_config(&dir), Path::new("/")).unwrap();
    let names: Vec<&str> = dataset
        .users
        .categorical
        .iter()
        .map(|f| f.name.as_str())
        .collect();
    assert_eq!(
        names,
        vec!["age_bucket", "gender", "occupation", "zip_prefix"]
    );
    let genre = &dataset.items.multi_hot[0];
    assert_eq!(genre.vocabulary.len(), 20, "19 genres plus <unknown>");
    assert_eq!(dataset.items.numeric[0].name, "release_year");
    assert_eq!(dataset.items.numeric[0].values[0], 1995.0, "Toy Story");
    for field in &dataset.users.categorical {
        assert_eq!(field.vocabulary[0], "<unknown>");
    }
}

#[test]
fn source_files_of_ml_100k_are_its_data_files() {
    let Some(dir) = common::ml100k_dir() else {
        return;
    };
    let files = source_files(&movielens_config(&dir), Path::new("/")).unwrap();
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["u.data", "u.user", "u.item", "u.genre"]);
}

fn write_ml_1m(dir: &Path) {
    common::write(
        dir,
        "users.dat",
        b"1::F::1::10::48067\n2::M::56::16::70072\n3::M::25::15::55117\n",
    );
    // Latin-1 title: "Caf\xe9" is "Café".
    common::write(
        dir,
        "movies.dat",
        b"1::Toy Story (1995)::Animation|Children's|Comedy\n2::Caf\xe9 (1999)::Drama\n",
    );
    common::write(
        dir,
        "ratings.dat",
        b"1::1::5::978300760\n1::2::3::978302109\n2::1::4::978301968\n3::2::2::978300275\n",
    );
}

#[test]
fn ml_1m_layout_is_detected_and_loaded() {
    let dir = common::scratch_dir("ml1m");
    write_ml_1m(&dir);
    let dataset = load(&movielens_config(&dir), Path::new("/")).unwrap();
    assert_eq!(dataset.name, "movielens-1m");
    assert_eq!(
        (
            dataset.users.count,
            dataset.items.count,
            dataset.interactions.len()
        ),
        (3, 2, 4)
    );
    assert_eq!(dataset.interactions.label, vec![1.0, 0.0, 1.0, 0.0]);
    assert_eq!(dataset.interactions.timestamp[0], 978300760);
    let genre = &dataset.items.multi_hot[0];
    assert_eq!(
        genre.vocabulary,
        vec!["<unknown>", "Animation", "Children's", "Comedy", "Drama"]
    );
    assert_eq!(genre.values, vec![vec![1, 2, 3], vec![4]]);
    assert_eq!(dataset.items.numeric[0].values, vec![1995.0, 1999.0]);
    let age = &dataset.users.categorical[0];
    assert_eq!(age.name, "age_bucket");
    let user_ages: Vec<&str> = age
        .values
        .iter()
        .map(|&c| age.vocabulary[c as usize].as_str())
        .collect();
    assert_eq!(user_ages, vec!["<18", "56+", "25-34"]);
    let occupation = &dataset.users.categorical[2];
    assert_eq!(
        occupation.vocabulary[occupation.values[0] as usize],
        "K-12 student"
    );
}

#[test]
fn ml_1m_unknown_user_in_ratings_names_file_line_and_content() {
    let dir = common::scratch_dir("ml1m-unknown");
    write_ml_1m(&dir);
    common::write(
        &dir,
        "ratings.dat",
        b"1::1::5::978300760\n9::1::4::978301968\n",
    );
    let error = load(&movielens_config(&dir), Path::new("/")).unwrap_err();
    match &error {
        DataError::MalformedRow {
            path,
            line,
            content,
            reason,
        } => {
            assert!(path.ends_with("ratings.dat"));
            assert_eq!(*line, 2);
            assert_eq!(content, "9::1::4::978301968");
            assert!(reason.contains("unknown user id"), "{reason}");
        }
        other => panic!("unexpected {other:?}"),
    }
    let message = error.to_string();
    assert!(
        message.contains("ratings.dat:2") && message.contains("9::1::4::978301968"),
        "{message}"
    );
}

#[test]
fn non_numeric_rating_is_an_error_under_the_error_policy() {
    let dir = common::scratch_dir("ml1m-rating");
    write_ml_1m(&dir);
    common::write(&dir, "ratings.dat", b"1::1::five::978300760\n");
    let error = load(&movielens_config(&dir), Path::new("/")).unwrap_err();
    assert!(
        matches!(error, DataError::MalformedRow { line: 1, .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("five"));
}

#[test]
fn drop_policy_counts_bad_rows_instead_of_failing() {
    let dir = common::scratch_dir("ml1m-drop");
    write_ml_1m(&dir);
    common::write(
        &dir,
        "ratings.dat",
        b"1::1::5::978300760\n1::2::x::1\n9::1::4::2\n1::2\n2::1::2::978301968\n",
    );
    let config = DataConfig {
        bad_rows: BadRowPolicy::Drop,
        ..movielens_config(&dir)
    };
    let dataset = load(&config, Path::new("/")).unwrap();
    assert_eq!(dataset.dropped_rows, 3);
    assert_eq!(dataset.interactions.len(), 2);
}

#[test]
fn empty_ratings_file_is_an_error() {
    let dir = common::scratch_dir("ml1m-empty");
    write_ml_1m(&dir);
    common::write(&dir, "ratings.dat", b"\n");
    let error = load(&movielens_config(&dir), Path::new("/")).unwrap_err();
    assert!(matches!(error, DataError::EmptyFile { .. }), "{error:?}");
}

#[test]
fn missing_folder_is_an_error_naming_it() {
    let dir = common::scratch_dir("ml-missing").join("nope");
    let error = load(&movielens_config(&dir), Path::new("/")).unwrap_err();
    assert!(matches!(error, DataError::MissingFile { .. }), "{error:?}");
    assert!(error.to_string().contains("nope"));
}

#[test]
fn missing_users_file_is_an_error_naming_it() {
    let dir = common::scratch_dir("ml1m-nousers");
    write_ml_1m(&dir);
    std::fs::remove_file(dir.join("users.dat")).unwrap();
    let error = load(&movielens_config(&dir), Path::new("/")).unwrap_err();
    match error {
        DataError::MissingFile { path } => assert!(path.ends_with("users.dat")),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn path_is_resolved_relative_to_the_base_dir() {
    let base = common::scratch_dir("ml1m-base");
    std::fs::create_dir_all(base.join("data/ml-1m")).unwrap();
    write_ml_1m(&base.join("data/ml-1m"));
    let config = DataConfig {
        source: DataSource::Movielens,
        path: Some("data/ml-1m".into()),
        ..Default::default()
    };
    assert_eq!(load(&config, &base).unwrap().interactions.len(), 4);
}

#[test]
fn ml_100k_layout_reads_latin1_titles_and_genre_flags() {
    let dir = common::scratch_dir("ml100k-small");
    common::write(&dir, "u.genre", b"unknown|0\nAction|1\nDrama|2\n\n");
    common::write(
        &dir,
        "u.user",
        b"1|24|M|technician|85711\n2|53|F|other|T8H1N\n",
    );
    common::write(
        &dir,
        "u.item",
        b"1|Caf\xe9 (1995)|01-Jan-1995||http://x|0|1|1\n2|Other|||http://y|1|0|0\n",
    );
    common::write(&dir, "u.data", b"1\t1\t4\t10\n2\t2\t3\t20\n");
    let dataset = load(&movielens_config(&dir), Path::new("/")).unwrap();
    assert_eq!(dataset.items.multi_hot[0].values, vec![vec![1, 2], vec![3]]);
    assert_eq!(
        dataset.items.multi_hot[0].vocabulary,
        vec!["<unknown>", "Action", "Drama", "unknown"]
    );
    assert!(
        dataset.items.numeric[0].values[1].is_nan(),
        "missing release date"
    );
    let zip = &dataset.users.categorical[3];
    assert_eq!(zip.vocabulary, vec!["<unknown>", "8", "T"]);
}

#[test]
fn movielens_without_a_path_or_env_var_is_a_no_path_error() {
    if std::env::var_os("LIMAML_DATA").is_some() {
        eprintln!("notice: LIMAML_DATA is set; skipping the no-path check");
        return;
    }
    let config = DataConfig {
        source: DataSource::Movielens,
        ..Default::default()
    };
    assert!(matches!(
        load(&config, Path::new("/")),
        Err(DataError::NoPath)
    ));
}
