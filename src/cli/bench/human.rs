//! The training suite's terminal tables, from its JSON document. Must not measure anything.


use limaml_models::{BENCH_INNER_STEPS, BENCH_META_BATCH};
use serde_json::{json, Value};

use super::{
    SCALING_MAX_ROWS, TARGET_CACHED_RUN_SECONDS, TARGET_EXPORT_RATIO, TARGET_FIRST_ORDER_RATIO, TARGET_SCORING_RATIO,
    TARGET_SECOND_ORDER_RATIO, TARGET_TRAINING_PEAK_FRACTION,
};

pub(super) fn print_human(doc: &Value) {
    let threads = &doc["threads"];
    let data = &doc["data"];
    println!(
        "limaml bench ({} threads; synthetic data: {} users, {} items, {} interactions, {} tasks; meta-batch {}, {} inner step)",
        threads, data["users"], data["items"], data["interactions"], data["tasks"], BENCH_META_BATCH, BENCH_INNER_STEPS
    );
    let cores = doc["cores"].as_f64().unwrap_or(1.0);
    let busiest = doc["load_average_at_start"].as_f64().unwrap_or(0.0).max(doc["load_average_at_end"].as_f64().unwrap_or(0.0));
    if busiest > cores {
        println!(
            "warning: load average {busiest:.1} on {cores} cores: other processes compete for the CPUs; \
             throughputs are understated and ratios unreliable (RAYON_NUM_THREADS=1 suffers least)"
        );
    }
    if doc["torch"]["available"] != json!(true) {
        println!("note: {}", doc["torch"]["reason"].as_str().unwrap_or("PyTorch reference unavailable"));
    }
    let number = |v: &Value| v.as_f64().map_or("-".to_string(), |x| format!("{x:.0}"));
    let ratio = |v: &Value| v.as_f64().map_or("-".to_string(), |x| format!("{x:.2}x"));
    let mib = |v: &Value| v.as_f64().map_or("-".to_string(), |x| format!("{:.0} MiB", x / (1 << 20) as f64));
    println!();
    println!(
        "{:<22} {:>12} {:>12} {:>8} {:>14} {:>14} {:>8} {:>12} {:>12}",
        "size (meta/global/m)", "limaml t/s", "torch t/s", "ratio", "limaml ent/s", "torch ent/s", "ratio", "limaml row/s", "peak RSS"
    );
    for c in doc["configs"].as_array().into_iter().flatten() {
        for (order, label, ratio_field) in [
            ("first_order", "1st", "first_order_ratio_vs_torch"),
            ("second_order", "2nd", "second_order_ratio_vs_torch"),
        ] {
            let ours = &c["limaml"][order];
            let theirs = &c["torch"][order];
            let export_ratio = if order == "first_order" { ratio(&c["export_ratio_vs_torch"]) } else { String::new() };
            println!(
                "{:<22} {:>12} {:>12} {:>8} {:>14} {:>14} {:>8} {:>12} {:>12}",
                format!("{} {} {label}", c["name"].as_str().unwrap_or(""), c["layers"].as_str().unwrap_or("")),
                number(&ours["tasks_per_second"]),
                number(&theirs["tasks_per_second"]),
                ratio(&c[ratio_field]),
                number(&ours["entities_per_second"]),
                number(&theirs["entities_per_second"]),
                export_ratio,
                number(&ours["rows_per_second"]),
                mib(&ours["peak_rss_bytes"]),
            );
        }
    }
    println!();
    let peak = &doc["gemm_peak"];
    let gflops = |v: &Value| v.as_f64().map_or("-".to_string(), |x| format!("{:.1}", x / 1e9));
    let percent = |v: &Value| v.as_f64().map_or("-".to_string(), |x| format!("{:.0}%", x * 100.0));
    println!(
        "GEMM peak at the start ({}^3 f32, {} threads): {} GFLOP/s ({} independent single-threaded products, {} one \
         split product); each row's fractions are of the peak timed around it (its \"window\")",
        peak["n"],
        peak["threads"],
        gflops(&peak["peak_flops_per_second"]),
        gflops(&peak["independent_flops_per_second"]),
        gflops(&peak["split_flops_per_second"]),
    );
    println!(
        "{:<22} {:>12} {:>8} {:>12} {:>8} {:>12} {:>8} {:>14} {:>8} {:>14}",
        "limaml GFLOP/s", "train", "of peak", "export", "of peak", "score", "of peak", "torch row/s", "ratio", "window peak"
    );
    // The window peak of a measurement, or of each of its bracketing runs.
    let window_peak = |ours: &Value| -> String {
        let one = |run: &Value| gflops(&run["gemm_peak_window"]["peak_flops_per_second"]);
        match ours["runs"].as_array() {
            Some(runs) => runs.iter().map(one).collect::<Vec<_>>().join(" / "),
            None => one(ours),
        }
    };
    for c in doc["configs"].as_array().into_iter().flatten() {
        for (order, label) in [("first_order", "1st"), ("second_order", "2nd")] {
            let ours = &c["limaml"][order];
            let fraction = &ours["peak_fraction"];
            let (torch_rows, scoring) = if order == "first_order" {
                (number(&c["torch"][order]["rows_per_second"]), ratio(&c["scoring_ratio_vs_torch"]))
            } else {
                (String::new(), String::new())
            };
            println!(
                "{:<22} {:>12} {:>8} {:>12} {:>8} {:>12} {:>8} {:>14} {:>8} {:>14}",
                format!("{} {} {label}", c["name"].as_str().unwrap_or(""), c["layers"].as_str().unwrap_or("")),
                gflops(&ours["train_flops_per_second"]),
                percent(&fraction["train"]),
                gflops(&ours["export_flops_per_second"]),
                percent(&fraction["export"]),
                gflops(&ours["score_flops_per_second"]),
                percent(&fraction["score"]),
                torch_rows,
                scoring,
                window_peak(ours),
            );
        }
    }
    println!();
    println!(
        "scaling (model {}, {} items, at most {} support and query rows per task; train epoch includes validation):",
        doc["scaling"]["model"].as_str().unwrap_or(""),
        doc["scaling"]["items"],
        SCALING_MAX_ROWS
    );
    println!(
        "{:>8} {:>12} {:>10} {:>12} {:>10} {:>12} {:>16} {:>12}",
        "users", "interactions", "meta-train", "train epoch", "export", "store", "epoch s/1k users", "peak RSS"
    );
    for p in doc["scaling"]["points"].as_array().into_iter().flatten() {
        let users = p["users"].as_f64().unwrap_or(1.0);
        println!(
            "{:>8} {:>12} {:>10} {:>11.2}s {:>9.2}s {:>12} {:>16.3} {:>12}",
            // `Value`'s Display ignores widths: format the numbers as strings.
            p["users"].to_string(),
            p["interactions"].to_string(),
            p["meta_train_tasks"].to_string(),
            p["train_epoch_seconds"].as_f64().unwrap_or(f64::NAN),
            p["export_seconds"].as_f64().unwrap_or(f64::NAN),
            mib(&p["store_bytes"]),
            p["train_epoch_seconds"].as_f64().unwrap_or(f64::NAN) / (users / 1000.0),
            mib(&p["peak_rss_bytes"]),
        );
    }
    println!();
    if let Some(run) = doc["cached_run"].as_object() {
        println!(
            "limaml run {}: first {:.2}s, cached {:.3}s",
            run["spec"].as_str().unwrap_or(""),
            run["first_seconds"].as_f64().unwrap_or(f64::NAN),
            run["cached_seconds"].as_f64().unwrap_or(f64::NAN)
        );
    }
    let targets = &doc["targets"];
    let verdict = |t: &Value| match t["met"].as_bool() {
        Some(true) => "met",
        Some(false) => "NOT met",
        None => "not measured",
    };
    println!(
        "targets: first-order >= {}x torch: {}; second-order >= {}x: {}; export >= {}x: {}; scoring >= {}x: {}; \
         large first-order step >= {:.0}% of the GEMM peak: {}; cached run < {}s: {}",
        TARGET_FIRST_ORDER_RATIO,
        verdict(&targets["first_order_ratio"]),
        TARGET_SECOND_ORDER_RATIO,
        verdict(&targets["second_order_ratio"]),
        TARGET_EXPORT_RATIO,
        verdict(&targets["export_ratio"]),
        TARGET_SCORING_RATIO,
        verdict(&targets["scoring_ratio"]),
        TARGET_TRAINING_PEAK_FRACTION * 100.0,
        verdict(&targets["training_peak_fraction"]),
        TARGET_CACHED_RUN_SECONDS,
        verdict(&targets["cached_run_seconds"]),
    );
}
