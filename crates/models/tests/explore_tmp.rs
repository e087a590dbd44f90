mod common;
use common::*;
use limaml_data::TaskRole;
use limaml_models::*;

#[test]
#[ignore]
fn explore() {
    let (interactions, tasks) = synthetic(7);
    let base = quick_train();
    let variants: Vec<(String, LimamlConfig, TrainConfig)> = vec![
        ("default".into(), limaml(), base.clone()),
        ("lr0.5".into(), LimamlConfig { inner_lr: 0.5, ..limaml() }, base.clone()),
        ("lr1 steps3".into(), LimamlConfig { inner_lr: 1.0, inner_steps: 3, ..limaml() }, base.clone()),
        ("lr0.5 steps3".into(), LimamlConfig { inner_lr: 0.5, inner_steps: 3, ..limaml() }, base.clone()),
        ("steps0".into(), LimamlConfig { inner_steps: 0, ..limaml() }, base.clone()),
        ("no act lr1 s3".into(), LimamlConfig { inner_lr: 1.0, inner_steps: 3, meta_inputs: vec![MetaInput::Id, MetaInput::Features], ..limaml() }, base.clone()),
        ("lr0.5 pat8 ep60".into(), LimamlConfig { inner_lr: 0.5, ..limaml() }, TrainConfig { epochs: 60, patience: 8, ..base.clone() }),
        ("lr0.5 2nd".into(), LimamlConfig { inner_lr: 0.5, second_order: true, ..limaml() }, base.clone()),
    ];
    for (name, c, t) in variants {
        let start = std::time::Instant::now();
        let model = train(&MethodConfig::Limaml(c), &t, &interactions, &tasks, 1, &mut |_| {}).unwrap();
        let p = predict(&model, &interactions, &tasks, None, &[TaskRole::Test]).unwrap();
        let r = evaluate(&p, &interactions, &tasks);
        let best_val = model.curve[model.best_epoch - 1].validation_auc.unwrap();
        eprintln!("{name:20} test auc {:.4} gauc {:.4} val {:.4} best {} of {} in {:.2}s", r.overall.auc.unwrap(), r.overall.gauc.unwrap(), best_val, model.best_epoch, model.curve.len(), start.elapsed().as_secs_f64());
    }
}
