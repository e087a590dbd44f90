//! Throwaway tuning harness (deleted at the end): trains one method on MovieLens 100K over
//! seeds 1..=3 and prints validation AUC. `tune METHOD_JSON [TRAIN_JSON] [--test]`.
use limaml_data::{DataConfig, SplitConfig, TaskRole};
use limaml_models::*;
use std::path::Path;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let method: MethodConfig = serde_json::from_str(&args[1]).unwrap();
    let train_config: TrainConfig =
        serde_json::from_str(args.get(2).map(String::as_str).unwrap_or("{}")).unwrap();
    let show_test = args.iter().any(|a| a == "--test");
    let data_config: DataConfig = serde_json::from_value(serde_json::json!({
        "source": "movielens", "path": "/work/shared/data/ml-100k", "click_threshold": 4.0
    }))
    .unwrap();
    let dataset = limaml_data::load(&data_config, Path::new(".")).unwrap();
    let mut vals = Vec::new();
    let mut tests = Vec::new();
    let start = std::time::Instant::now();
    for seed in 1..=3u64 {
        let tasks = limaml_data::slice(&dataset, &SplitConfig::default(), seed).unwrap();
        let model = train(&method, &train_config, &dataset.interactions, &tasks, seed, &mut |_| {}).unwrap();
        let curve: Vec<String> = model
            .curve
            .iter()
            .map(|e| format!("{:.4}", e.validation_auc.unwrap_or(f64::NAN)))
            .collect();
        let best = model.curve[model.best_epoch - 1].validation_auc.unwrap();
        println!("seed {seed}: best epoch {} val {:.4} curve {}", model.best_epoch, best, curve.join(" "));
        vals.push(best);
        if show_test {
            let p = predict(&model, &dataset.interactions, &tasks, None, &[TaskRole::Test]).unwrap();
            let r = evaluate(&p, &dataset.interactions, &tasks);
            println!("  test auc {:.4} gauc {:?} by_state {:?}", r.overall.auc.unwrap(), r.overall.gauc,
                r.by_state.iter().map(|(k, m)| (k.clone(), m.auc)).collect::<Vec<_>>());
            tests.push(r.overall.auc.unwrap());
        }
    }
    let mean = vals.iter().sum::<f64>() / vals.len() as f64;
    println!("MEAN VAL {:.4}  ({:.1}s)", mean, start.elapsed().as_secs_f64());
    if show_test {
        println!("MEAN TEST {:.4}", tests.iter().sum::<f64>() / tests.len() as f64);
    }
}
