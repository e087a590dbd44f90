//! Throughput numbers for the report (ignored by default): `cargo test --release -p
//! limaml-models --test bench -- --ignored --nocapture`.

mod common;

use limaml_models::*;

#[test]
#[ignore]
fn print_meta_training_throughput() {
    let (interactions, tasks) = common::synthetic_sized(7, 1200);
    for (second_order, inner_steps) in [(false, 1), (true, 1), (false, 3), (true, 3)] {
        let config = LimamlConfig {
            second_order,
            inner_steps,
            ..LimamlConfig::default()
        };
        let r = bench_meta_training(
            &config,
            &TrainConfig::default(),
            &interactions,
            &tasks,
            1,
            40,
        )
        .unwrap();
        eprintln!(
            "second_order={second_order} inner_steps={inner_steps}: {:.0} tasks/s, export {:.0} entities/s, serving {:.0} rows/s ({} tasks, {} entities, {} rows)",
            r.tasks_per_second, r.entities_per_second, r.rows_per_second, r.tasks, r.entities, r.rows
        );
    }
}
