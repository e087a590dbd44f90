//! Profiles LiMAML meta-training (`bench_meta_training`: outer steps, then export and scoring)
//! on the bench's data and model sizes, to run under `perf` or to compare two builds.
//!
//! `cargo run --release -p limaml-models --example training_profile -- [small|large] [first|second] [meta_batches]`

use limaml_models::{bench_limaml_config, bench_meta_training, TrainConfig};

/// The `limaml` binary's allocator (src/main.rs), so that the profile sees what it sees.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let size = args.get(1).map_or("large", String::as_str);
    let second_order = args.get(2).is_some_and(|o| o == "second");
    let meta_batches: usize = args.get(3).and_then(|n| n.parse().ok()).unwrap_or(100);
    let (meta_hidden, global_hidden, m) = if size == "small" { (64, 64, 64) } else { (256, 256, 128) };
    // The bench's data (2 000 users, 1 000 items, default split) and step (src/cli/bench.rs).
    let data = limaml_data::DataConfig {
        synthetic: limaml_data::SyntheticConfig { seed: 0, n_users: 2000, n_items: 1000, ..Default::default() },
        ..Default::default()
    };
    let dataset = limaml_data::load(&data, std::path::Path::new(".")).expect("synthetic data");
    let tasks = limaml_data::slice(&dataset, &limaml_data::SplitConfig::default(), 1).expect("slices");
    let config = bench_limaml_config(meta_hidden, global_hidden, m, second_order);
    let result = bench_meta_training(&config, &TrainConfig::default(), &dataset.interactions, &tasks, 7, meta_batches)
        .expect("bench");
    println!(
        "{size} {}: {:.0} tasks/s, {:.0} entities/s exported, {:.0} rows/s scored",
        if second_order { "second-order" } else { "first-order" },
        result.tasks_per_second,
        result.entities_per_second,
        result.rows_per_second
    );
}
