//! The generic CSV/TSV loader with a column mapping.

mod common;

use std::path::Path;

use limaml_data::{load, source_files, BadRowPolicy, CsvConfig, DataConfig, DataError, DataSource};

fn csv_config(file: &Path, csv: CsvConfig) -> DataConfig {
    DataConfig {
        source: DataSource::Csv,
        path: Some(file.to_string_lossy().into_owned()),
        csv,
        ..Default::default()
    }
}

fn mapping() -> CsvConfig {
    CsvConfig {
        user: "member".into(),
        item: "job".into(),
        label: Some("applied".into()),
        timestamp: Some("ts".into()),
        user_categorical: vec!["country".into()],
        user_numeric: vec!["seniority".into()],
        item_categorical: vec!["company".into()],
        item_tags: Some("skills".into()),
        ..Default::default()
    }
}

const LOG: &str = "member,job,applied,ts,country,seniority,company,skills\n\
10,a,1,100,us,3,acme,rust|sql\n\
2,b,0,50,de,5,\"Initech, Inc\",python\n\
10,b,true,300,us,3,\"Initech, Inc\",python\n";

#[test]
fn csv_columns_map_to_entities_labels_and_features() {
    let dir = common::scratch_dir("csv");
    let file = common::write(&dir, "log.csv", LOG.as_bytes());
    let dataset = load(&csv_config(&file, mapping()), Path::new("/")).unwrap();
    assert_eq!(dataset.name, "log.csv");
    assert_eq!(
        dataset.users.raw_ids,
        vec!["2", "10"],
        "numeric ids in numeric order"
    );
    assert_eq!(dataset.items.raw_ids, vec!["a", "b"]);
    assert_eq!(dataset.interactions.user, vec![1, 0, 1]);
    assert_eq!(dataset.interactions.item, vec![0, 1, 1]);
    assert_eq!(dataset.interactions.label, vec![1.0, 0.0, 1.0]);
    assert_eq!(dataset.interactions.timestamp, vec![100, 50, 300]);
    assert_eq!(
        dataset.users.categorical[0].vocabulary,
        vec!["<unknown>", "de", "us"]
    );
    assert_eq!(dataset.users.numeric[0].values, vec![5.0, 3.0]);
    assert_eq!(
        dataset.items.categorical[0].vocabulary,
        vec!["<unknown>", "Initech, Inc", "acme"]
    );
    assert_eq!(
        dataset.items.multi_hot[0].vocabulary,
        vec!["<unknown>", "python", "rust", "sql"]
    );
    assert_eq!(dataset.items.multi_hot[0].values, vec![vec![2, 3], vec![1]]);
}

#[test]
fn tsv_without_header_maps_columns_by_index_and_thresholds_ratings() {
    let dir = common::scratch_dir("tsv");
    let file = common::write(&dir, "log.tsv", b"u1\ti1\t5\t1\nu2\ti1\t2\t2\n");
    let csv = CsvConfig {
        delimiter: "\t".into(),
        has_header: false,
        user: "0".into(),
        item: "1".into(),
        rating: Some("2".into()),
        timestamp: Some("3".into()),
        ..Default::default()
    };
    let dataset = load(&csv_config(&file, csv), Path::new("/")).unwrap();
    assert_eq!(dataset.interactions.label, vec![1.0, 0.0]);
}

#[test]
fn missing_timestamp_column_uses_row_order() {
    let dir = common::scratch_dir("csv-nots");
    let file = common::write(&dir, "log.csv", b"user,item,label\na,x,1\nb,x,0\n");
    let csv = CsvConfig {
        label: Some("label".into()),
        timestamp: None,
        ..Default::default()
    };
    let dataset = load(&csv_config(&file, csv), Path::new("/")).unwrap();
    assert_eq!(dataset.interactions.timestamp, vec![0, 1]);
}

#[test]
fn mapping_to_an_absent_column_is_an_error_naming_it() {
    let dir = common::scratch_dir("csv-col");
    let file = common::write(&dir, "log.csv", LOG.as_bytes());
    let csv = CsvConfig {
        user: "user_id".into(),
        ..mapping()
    };
    let error = load(&csv_config(&file, csv), Path::new("/")).unwrap_err();
    assert!(
        matches!(&error, DataError::MissingColumn { column, .. } if column == "user_id"),
        "{error:?}"
    );
}

#[test]
fn wrong_field_count_names_file_line_and_content() {
    let dir = common::scratch_dir("csv-bad");
    let file = common::write(&dir, "log.csv", format!("{LOG}7,c,1\n").as_bytes());
    let error = load(&csv_config(&file, mapping()), Path::new("/")).unwrap_err();
    match error {
        DataError::MalformedRow {
            path,
            line,
            content,
            ..
        } => {
            assert!(path.ends_with("log.csv"));
            assert_eq!(line, 5);
            assert_eq!(content, "7,c,1");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn drop_policy_counts_bad_csv_rows() {
    let dir = common::scratch_dir("csv-drop");
    let file = common::write(
        &dir,
        "log.csv",
        format!("{LOG}7,c,1\n7,c,maybe,1,us,1,x,y\n").as_bytes(),
    );
    let config = DataConfig {
        bad_rows: BadRowPolicy::Drop,
        ..csv_config(&file, mapping())
    };
    let dataset = load(&config, Path::new("/")).unwrap();
    assert_eq!(dataset.dropped_rows, 2);
    assert_eq!(dataset.interactions.len(), 3);
}

#[test]
fn source_files_of_csv_is_the_file() {
    let config = DataConfig {
        source: DataSource::Csv,
        path: Some("logs/a.csv".into()),
        ..Default::default()
    };
    assert_eq!(
        source_files(&config, Path::new("/exp")).unwrap(),
        vec![Path::new("/exp/logs/a.csv")]
    );
}

#[test]
fn csv_without_a_label_or_rating_column_is_a_config_error() {
    let config = DataConfig {
        source: DataSource::Csv,
        path: Some("a.csv".into()),
        ..Default::default()
    };
    let error = load(&config, Path::new("/")).unwrap_err();
    assert!(
        matches!(error, DataError::InvalidConfig { .. }),
        "{error:?}"
    );
}
