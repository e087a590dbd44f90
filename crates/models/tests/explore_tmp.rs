mod common;
use common::*;
use limaml_data::TaskRole;
use limaml_models::*;

#[test]
#[ignore]
fn explore() {
    let n: usize = std::env::var("NU").map(|v| v.parse().unwrap()).unwrap_or(90);
    let (interactions, tasks) = synthetic_sized(7, n);
    for (name, m) in all_methods().into_iter().take(3) { let model = train(&m, &quick_train(), &interactions, &tasks, 1, &mut |_| {}).unwrap(); let p = predict(&model, &interactions, &tasks, None, &[TaskRole::Test]).unwrap(); eprintln!("{name:20} test auc {:.4}", evaluate(&p, &interactions, &tasks).overall.auc.unwrap()); }
    let base = quick_train();
    let variants: Vec<(String, LimamlConfig, TrainConfig)> = vec![
        ("noid s1 lr.1".into(), LimamlConfig { meta_inputs: vec![MetaInput::Features, MetaInput::Activity], ..limaml() }, base.clone()),
        ("noid s1 lr.5".into(), LimamlConfig { inner_lr: 0.5, meta_inputs: vec![MetaInput::Features, MetaInput::Activity], ..limaml() }, base.clone()),
        ("noid s3 lr1".into(), LimamlConfig { inner_lr: 1.0, inner_steps: 3, meta_inputs: vec![MetaInput::Features, MetaInput::Activity], ..limaml() }, base.clone()),
        ("noid s3 lr1 olr.003".into(), LimamlConfig { inner_lr: 1.0, inner_steps: 3, meta_inputs: vec![MetaInput::Features, MetaInput::Activity], ..limaml() }, TrainConfig { learning_rate: 0.003, epochs: 40, patience: 6, ..base.clone() }),
        ("act only s1 lr.5".into(), LimamlConfig { inner_lr: 0.5, meta_inputs: vec![MetaInput::Activity], ..limaml() }, base.clone()),
        ("noid s0".into(), LimamlConfig { inner_steps: 0, meta_inputs: vec![MetaInput::Features, MetaInput::Activity], ..limaml() }, base.clone()),
    ];
    for (name, c, t) in variants {
        let start = std::time::Instant::now();
        let model = train(&MethodConfig::Limaml(c), &t, &interactions, &tasks, 1, &mut |_| {}).unwrap();
        let p = predict(&model, &interactions, &tasks, None, &[TaskRole::Test]).unwrap();
        let r = evaluate(&p, &interactions, &tasks);
        let best_val = model.curve[model.best_epoch - 1].validation_auc.unwrap();
        if std::env::var("CURVE").is_ok() { for r in &model.curve { eprintln!("   {} {:.4} {:?}", r.epoch, r.train_loss, r.validation_auc); } }
        eprintln!("{name:20} test auc {:.4} gauc {:.4} val {:.4} best {} of {} in {:.2}s", r.overall.auc.unwrap(), r.overall.gauc.unwrap(), best_val, model.best_epoch, model.curve.len(), start.elapsed().as_secs_f64());
    }
}
