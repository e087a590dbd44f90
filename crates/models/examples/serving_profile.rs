//! Profiles Global-Block scoring from stored embeddings (`LimamlNet::logits_with_embeddings`,
//! the serving hot path) on synthetic data, and prints a checksum of the logits' bits so that
//! a change to the kernel can be checked for bit-identical results.
//!
//! `cargo run --release -p limaml-models --example serving_profile -- [small|large] [repeats] [concat|dot]`

use std::time::Instant;

use limaml_models::inputs::Features;
use limaml_models::limaml::LimamlNet;
use limaml_models::{DataShape, LimamlConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The `limaml` binary's allocator (src/main.rs), so that the profile sees what it sees.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let size = args.get(1).map_or("large", String::as_str);
    let repeats: usize = args.get(2).and_then(|r| r.parse().ok()).unwrap_or(5);
    let interaction = match args.get(3).map(String::as_str) {
        Some("dot") => limaml_models::MetaInteraction::Dot,
        _ => limaml_models::MetaInteraction::Concat,
    };
    let (global, m) = if size == "small" { (64, 64) } else { (256, 128) };
    let data = limaml_data::DataConfig {
        synthetic: limaml_data::SyntheticConfig { n_users: 2000, n_items: 1000, ..Default::default() },
        ..Default::default()
    };
    let dataset = limaml_data::load(&data, std::path::Path::new(".")).expect("synthetic data");
    let tasks = limaml_data::slice(&dataset, &limaml_data::SplitConfig::default(), 1).expect("slices");
    let config = LimamlConfig { hidden: vec![global, global], meta_embedding_dim: m, meta_interaction: interaction, ..LimamlConfig::default() };
    let mut rng = StdRng::seed_from_u64(7);
    let (net, store) = LimamlNet::create(&config, DataShape::of(&tasks), &mut rng).expect("a network");
    let features = Features::new(&tasks.features).expect("features");
    // Every query row, with its task's (random) embedding, as the bench scores them.
    let mut rows = Vec::new();
    let mut per_row = Vec::new();
    for task in &tasks.tasks {
        let embedding: Vec<f32> = (0..m).map(|_| rng.random_range(-1.0..1.0)).collect();
        for &r in &task.query {
            rows.push(r);
            per_row.extend_from_slice(&embedding);
        }
    }
    let params = store.tensors();
    let mut best = f64::INFINITY;
    let mut checksum = 0u64;
    for _ in 0..repeats {
        let started = Instant::now();
        let logits = net.logits_with_embeddings(&params, &features, &dataset.interactions, &rows, &per_row).unwrap();
        best = best.min(started.elapsed().as_secs_f64());
        checksum = logits.iter().fold(0u64, |h, v| h.rotate_left(5) ^ u64::from(v.to_bits()));
    }
    println!("{size} {interaction:?}: {} rows, best {:.4} s, {:.0} rows/s, logits checksum {checksum:016x}", rows.len(), best, rows.len() as f64 / best);
}
