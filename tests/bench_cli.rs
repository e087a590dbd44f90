//! `limaml bench` without PyTorch: one throughput child run directly (fast), and the reference
//! reported as missing when `LIMAML_BENCH_DIR` points at a folder without a venv.

use std::process::Command;

fn limaml() -> Command {
    Command::new(env!("CARGO_BIN_EXE_limaml"))
}

/// A throughput child on a tiny task set prints one JSON document with positive throughputs.
#[test]
fn throughput_child_reports_positive_throughputs() {
    let dir = tempfile::tempdir().unwrap();
    let data = limaml_data::DataConfig {
        synthetic: limaml_data::SyntheticConfig { n_users: 60, n_items: 40, ..Default::default() },
        ..Default::default()
    };
    let dataset = limaml_data::load(&data, dir.path()).unwrap();
    let tasks = limaml_data::slice(&dataset, &limaml_data::SplitConfig::default(), 1).unwrap();
    std::fs::write(dir.path().join("tasks.postcard"), limaml_data::to_bytes(&(&dataset.interactions, &tasks))).unwrap();
    let job = serde_json::json!({
        "kind": "throughput",
        "data_dir": dir.path(),
        "size": "small",
        "second_order": false,
        "meta_batches": 2,
    });
    let output = limaml()
        .arg("bench")
        .env("LIMAML_BENCH_CHILD_JOB", job.to_string())
        .env("RAYON_NUM_THREADS", "1")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    for field in ["tasks_per_second", "entities_per_second", "rows_per_second"] {
        assert!(report[field].as_f64().unwrap() > 0.0, "{field}: {report}");
    }
    assert_eq!(report["tasks"], 32);
    assert!(report["peak_rss_bytes"].as_u64().unwrap() > 0);
    for field in ["train_flops_per_second", "export_flops_per_second", "score_flops_per_second"] {
        assert!(report[field].as_f64().unwrap() > 0.0, "{field}: {report}");
    }
}

/// The GEMM-peak child measures both layouts and reports the faster as the peak.
#[test]
fn gemm_peak_child_reports_the_faster_layout_as_the_peak() {
    let job = serde_json::json!({"kind": "gemm_peak", "threads": 1, "seconds": 0.05});
    let output = limaml().arg("bench").env("LIMAML_BENCH_CHILD_JOB", job.to_string()).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let independent = report["independent_flops_per_second"].as_f64().unwrap();
    let split = report["split_flops_per_second"].as_f64().unwrap();
    assert!(independent > 0.0 && split > 0.0, "{report}");
    assert_eq!(report["peak_flops_per_second"].as_f64().unwrap(), independent.max(split));
}

/// An unknown model size in a child job is bad input (exit 2), not a crash.
#[test]
fn child_rejects_an_unknown_size() {
    let job = serde_json::json!({"kind": "throughput", "data_dir": "/nonexistent", "size": "huge",
                                 "second_order": false, "meta_batches": 1});
    let output = limaml().arg("bench").env("LIMAML_BENCH_CHILD_JOB", job.to_string()).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
}
