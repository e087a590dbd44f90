//! The hand-written passes (`limaml_models::kernel`) against candle's autograd: the same
//! gradients, embeddings and logits on the same weights and tasks, with the default dot-product
//! Global Block and with the concatenation-only one.

mod common;

use candle_core::Tensor;
use limaml_models::inputs::DataShape;
use limaml_models::limaml::{
    latest_support, InnerGradients, LimamlData, LimamlNet, TaskBatch, TaskRows,
};
use limaml_models::{LimamlConfig, MetaInteraction, OuterRows};
use rand::rngs::StdRng;
use rand::SeedableRng;

/// `|a - b| <= 1e-4 * max(1, max |b|)` elementwise; returns the largest difference.
fn assert_close(what: &str, a: &Tensor, b: &Tensor) -> f32 {
    let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(a.len(), b.len(), "{what}: sizes");
    let scale = b.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
    assert!(worst <= 1e-4 * scale, "{what}: largest difference {worst} (scale {scale})");
    worst
}

/// Every parameter's gradient of the first-order outer loss, both ways, for 12 tasks of the
/// synthetic data (uneven support and query sizes; with `support_and_query` the outer rows
/// start with the support rows).
fn compare_gradients(config: &LimamlConfig) {
    compare_gradients_of(config, InnerGradients::FirstOrder)
}

/// The first `n` training tasks' support rows (the latest 40) and outer rows (as
/// `config.outer_rows` says), as the comparisons batch them.
fn support_and_outer_rows(data: &LimamlData, config: &LimamlConfig, n: usize) -> (Vec<Vec<u32>>, Vec<Vec<u32>>) {
    let picked: Vec<_> = data.training_tasks.iter().take(n).collect();
    assert_eq!(picked.len(), n, "training tasks");
    let supports: Vec<Vec<u32>> = picked.iter().map(|t| latest_support(data, &t.support, 40)).collect();
    let outer = picked
        .iter()
        .zip(&supports)
        .map(|(t, s)| match config.outer_rows {
            OuterRows::SupportAndQuery => s.iter().chain(&t.query).copied().collect(),
            OuterRows::Query | OuterRows::CrossHalves => t.query.clone(),
        })
        .collect();
    (supports, outer)
}

/// A batch of the first `supports.len()` training tasks with those rows (every fifth task's id
/// hidden).
fn task_batch(data: &LimamlData, supports: &[Vec<u32>], outer: &[Vec<u32>]) -> TaskBatch {
    let members: Vec<TaskRows> = data
        .training_tasks
        .iter()
        .enumerate()
        .take(supports.len())
        .map(|(k, t)| TaskRows {
            entity: t.entity,
            hide_id: k % 5 == 4,
            support: &supports[k],
            query: &outer[k],
        })
        .collect();
    TaskBatch::new(data, &members).unwrap()
}

fn compare_gradients_of(config: &LimamlConfig, order: InnerGradients) {
    let (interactions, tasks) = common::synthetic(5);
    let mut rng = StdRng::seed_from_u64(3);
    let (net, store) = LimamlNet::create(config, DataShape::of(&tasks), &mut rng).unwrap();
    let data = LimamlData::new(&interactions, &tasks, config.evaluation_support_tasks).unwrap();
    let (supports, outer) = support_and_outer_rows(&data, config, 12);
    let batch = task_batch(&data, &supports, &outer);
    let params = store.tensors();
    let loss = net
        .autograd_outer_loss(&params, &data, &batch, order)
        .unwrap();
    let expected = loss.backward().unwrap();
    let (hand_loss, gradients) = net
        .outer_gradients(&params, &data, &batch, batch.entity_rows(), None, order)
        .unwrap();
    let autograd_loss = loss.to_scalar::<f32>().unwrap() as f64;
    assert!((hand_loss - autograd_loss).abs() < 1e-5, "loss {hand_loss} vs {autograd_loss}");
    assert_eq!(gradients.len(), store.vars().len(), "a gradient for every parameter");
    for (index, gradient) in &gradients {
        let name = &store.names()[*index];
        let reference = expected.get(store.vars()[*index].as_tensor()).unwrap_or_else(|| panic!("{name}: no autograd gradient"));
        assert_close(name, gradient, reference);
    }
    if order == InnerGradients::SecondOrder && config.inner_steps > 0 {
        // The second-order terms are large enough for the comparison above to see them.
        let (_, first_order) = net
            .outer_gradients(&params, &data, &batch, batch.entity_rows(), None, InnerGradients::FirstOrder)
            .unwrap();
        let differs = gradients.iter().zip(&first_order).any(|((_, a), (_, b))| {
            let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            diff > 1e-2 * b.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap().max(1e-3)
        });
        assert!(differs, "second-order gradients equal first-order ones");
    }
}

#[test]
fn first_order_gradients_match_autograd_with_support_and_query_outer_rows() {
    compare_gradients(&LimamlConfig {
        outer_rows: OuterRows::SupportAndQuery,
        entity_id_lr_multiplier: 7.0,
        ..LimamlConfig::default()
    });
}

#[test]
fn first_order_gradients_match_autograd_with_the_default_config() {
    compare_gradients(&LimamlConfig::default());
}

#[test]
fn first_order_gradients_match_autograd_with_a_mean_support_loss() {
    compare_gradients(&LimamlConfig {
        inner_prior_rows: 0.0,
        ..LimamlConfig::default()
    });
}

#[test]
fn first_order_gradients_match_autograd_with_query_outer_rows_and_two_inner_steps() {
    compare_gradients(&LimamlConfig {
        outer_rows: OuterRows::Query,
        inner_steps: 2,
        hidden: vec![48, 24, 12],
        meta_hidden: vec![20, 10],
        ..LimamlConfig::default()
    });
}

#[test]
fn first_order_gradients_match_autograd_without_hidden_meta_layers_or_inner_steps() {
    compare_gradients(&LimamlConfig {
        inner_steps: 0,
        meta_hidden: vec![],
        ..LimamlConfig::default()
    });
    compare_gradients(&LimamlConfig {
        meta_hidden: vec![],
        ..LimamlConfig::default()
    });
}

#[test]
fn first_order_gradients_match_autograd_with_the_concatenated_meta_embedding_only() {
    compare_gradients(&LimamlConfig {
        meta_interaction: MetaInteraction::Concat,
        inner_steps: 2,
        ..LimamlConfig::default()
    });
}

/// Second-order needs candle to keep the inner gradients' graph; the variable is read per
/// thread, and each test runs on a fresh thread.
fn second_order_mode() {
    std::env::set_var("CANDLE_GRAD_DO_NOT_DETACH", "1");
}

#[test]
fn second_order_gradients_match_autograd_with_support_and_query_outer_rows() {
    second_order_mode();
    let config = LimamlConfig {
        outer_rows: OuterRows::SupportAndQuery,
        ..LimamlConfig::default()
    };
    compare_gradients_of(&config, InnerGradients::SecondOrder);
}

#[test]
fn second_order_gradients_match_autograd_with_the_default_config() {
    second_order_mode();
    compare_gradients_of(&LimamlConfig::default(), InnerGradients::SecondOrder);
}

#[test]
fn second_order_gradients_match_autograd_through_two_inner_steps_and_deeper_blocks() {
    second_order_mode();
    let config = LimamlConfig {
        outer_rows: OuterRows::Query,
        inner_steps: 2,
        hidden: vec![48, 24, 12],
        meta_hidden: vec![20, 10],
        ..LimamlConfig::default()
    };
    compare_gradients_of(&config, InnerGradients::SecondOrder);
}

#[test]
fn second_order_gradients_match_autograd_without_hidden_meta_layers() {
    second_order_mode();
    let config = LimamlConfig {
        meta_hidden: vec![],
        hidden: vec![],
        ..LimamlConfig::default()
    };
    compare_gradients_of(&config, InnerGradients::SecondOrder);
}

#[test]
fn second_order_gradients_match_autograd_with_the_concatenated_meta_embedding_only() {
    second_order_mode();
    let config = LimamlConfig {
        meta_interaction: MetaInteraction::Concat,
        ..LimamlConfig::default()
    };
    compare_gradients_of(&config, InnerGradients::SecondOrder);
}

#[test]
fn exported_embeddings_match_autograd_adaptation() {
    let config = LimamlConfig {
        inner_steps: 3,
        ..LimamlConfig::default()
    };
    let (interactions, tasks) = common::synthetic(8);
    let mut rng = StdRng::seed_from_u64(4);
    let (net, store) = LimamlNet::create(&config, DataShape::of(&tasks), &mut rng).unwrap();
    let data = LimamlData::new(&interactions, &tasks, true).unwrap();
    let members: Vec<TaskRows> = tasks
        .tasks
        .iter()
        .map(|t| TaskRows {
            entity: t.entity,
            hide_id: false,
            support: &t.support,
            query: &[],
        })
        .collect();
    let params = store.tensors();
    let hand = net.adapted_meta_embeddings(&params, &data, &members).unwrap();
    let batch = TaskBatch::new(&data, &members).unwrap();
    let reference = net.autograd_meta_embeddings(&params, &data, &batch).unwrap();
    let hand = Tensor::from_vec(hand, reference.shape(), &candle_core::Device::Cpu).unwrap();
    assert_close("meta embeddings", &hand, &reference);
}

#[test]
fn serving_logits_match_the_autograd_global_block() {
    let config = LimamlConfig::default();
    let (interactions, tasks) = common::synthetic(9);
    let mut rng = StdRng::seed_from_u64(6);
    let (net, store) = LimamlNet::create(&config, DataShape::of(&tasks), &mut rng).unwrap();
    let features = limaml_models::inputs::Features::new(&tasks.features).unwrap();
    let rows: Vec<u32> = (0..interactions.len() as u32).step_by(7).collect();
    let m = config.meta_embedding_dim;
    let meta: Vec<f32> = (0..rows.len() * m).map(|k| ((k * 37 % 101) as f32 - 50.0) / 40.0).collect();
    let params = store.tensors();
    let hand = net
        .logits_with_embeddings(&params, &features, &interactions, &rows, &meta)
        .unwrap();
    let index = |f: fn(&limaml_data::Interactions, usize) -> u32| {
        let values: Vec<u32> = rows.iter().map(|&r| f(&interactions, r as usize)).collect();
        Tensor::from_vec(values, rows.len(), &candle_core::Device::Cpu).unwrap()
    };
    let users = index(|i, r| i.user[r]);
    let items = index(|i, r| i.item[r]);
    let meta_tensor = Tensor::from_vec(meta, (rows.len(), m), &candle_core::Device::Cpu).unwrap();
    let reference = net
        .global_logits(&params, &features, &users, &items, &items, &meta_tensor)
        .unwrap();
    let hand = Tensor::from_vec(hand, rows.len(), &candle_core::Device::Cpu).unwrap();
    assert_close("serving logits", &hand, &reference);
}

/// A dense stack of `widths` with deterministic pseudo-random weights and biases.
fn pseudo_random_stack(widths: &[usize], seed: usize) -> limaml_models::kernel::DenseStack {
    let value = |k: usize| (((k * 2654435761 + seed * 40503) % 1999) as f32 - 999.0) / 1500.0;
    limaml_models::kernel::DenseStack {
        widths: widths.to_vec(),
        weights: widths.windows(2).enumerate().map(|(l, w)| (0..w[0] * w[1]).map(|k| value(k + 7 * l)).collect()).collect(),
        biases: widths[1..].iter().enumerate().map(|(l, &w)| (0..w).map(|k| value(k + 11 * l) / 10.0).collect()).collect(),
    }
}

#[test]
fn serving_tiles_cover_the_rows_in_order_with_more_than_256_rows_each_or_all_of_them() {
    use limaml_models::kernel::{serve_tiles, SERVE_TILE};
    for rows in [0, 1, 256, 257, SERVE_TILE, SERVE_TILE + 256, SERVE_TILE + 257, 5 * SERVE_TILE + 3, 8192] {
        let tiles = serve_tiles(rows);
        let mut next = 0;
        for tile in &tiles {
            assert_eq!(tile.start, next, "{rows} rows: tiles are contiguous");
            assert!(tile.len() > 256 || tiles.len() == 1, "{rows} rows: tile {tile:?}");
            assert!(tile.len() < SERVE_TILE + 257, "{rows} rows: tile {tile:?} is at most a tile and a remainder");
            next = tile.end;
        }
        assert_eq!(next, rows, "{rows} rows: every row is in a tile");
    }
}

#[test]
fn serving_tiles_give_the_untiled_logits_bit_for_bit() {
    use limaml_models::kernel::{logits_per_row, untiled_logits_per_row, DotTerm, GlobalBlock, SERVE_TILE};
    let (row_dim, m) = (9, 6);
    // Rows in runs of equal embeddings (a user's rows), a few single rows, a partial last tile.
    let rows = 3 * SERVE_TILE + 37;
    let mut meta = Vec::with_capacity(rows * m);
    let mut run = 0;
    while meta.len() < rows * m {
        let length = [1, 13, 2, 40, 1, 7][run % 6];
        for _ in 0..length.min(rows - meta.len() / m) {
            meta.extend((0..m).map(|k| ((run * 31 + k * 17) % 23) as f32 / 7.0 - 1.5));
        }
        run += 1;
    }
    let x: Vec<f32> = (0..rows * row_dim).map(|k| ((k * 7919 % 211) as f32 - 105.0) / 50.0).collect();
    let dot_weight: Vec<f32> = (0..4 * m).map(|k| (k as f32 - 11.0) / 9.0).collect();
    for hidden in [vec![16, 12], vec![20], vec![8, 8, 8], vec![64, 64]] {
        let widths: Vec<usize> = std::iter::once(row_dim + m).chain(hidden.clone()).chain([1]).collect();
        let stack = pseudo_random_stack(&widths, hidden.len());
        let stack = stack.view();
        for with_dot in [false, true] {
            let global = GlobalBlock {
                stack: &stack,
                row_dim,
                dot: with_dot.then(|| DotTerm { weight: &dot_weight, columns: 2..5 }),
            };
            for n in [rows, 2 * SERVE_TILE + 100, 300, SERVE_TILE, 5, 1] {
                let gather = |tile: std::ops::Range<usize>, out: &mut [f32]| {
                    out.copy_from_slice(&x[tile.start * row_dim..tile.end * row_dim])
                };
                let tiled = logits_per_row(&global, &meta[..n * m], n, &gather);
                let untiled = untiled_logits_per_row(&global, &x[..n * row_dim], &meta[..n * m], n);
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&tiled), bits(&untiled), "hidden {hidden:?}, dot {with_dot}, {n} rows");
            }
        }
    }
}

#[test]
fn outer_gradients_are_the_same_bits_on_one_two_and_three_threads() {
    // 28 tasks of uneven sizes: four groups, the last one smaller; groups run in parallel and in
    // an order of their sizes, and are summed in group order.
    let config = LimamlConfig { meta_batch: 28, ..LimamlConfig::default() };
    let (interactions, tasks) = common::synthetic(5);
    let (net, store) = LimamlNet::create(&config, DataShape::of(&tasks), &mut StdRng::seed_from_u64(3)).unwrap();
    let data = LimamlData::new(&interactions, &tasks, config.evaluation_support_tasks).unwrap();
    let (supports, outer) = support_and_outer_rows(&data, &config, 28);
    let batch = task_batch(&data, &supports, &outer);
    let params = store.tensors();
    let bits_on = |threads: usize| -> (u64, Vec<Vec<u32>>) {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        let (loss, gradients) = pool
            .install(|| net.outer_gradients(&params, &data, &batch, batch.entity_rows(), None, InnerGradients::FirstOrder))
            .unwrap();
        let bits = gradients
            .iter()
            .map(|(_, g)| g.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|v| v.to_bits()).collect())
            .collect();
        (loss.to_bits(), bits)
    };
    let one = bits_on(1);
    assert_eq!(bits_on(2), one, "two threads");
    assert_eq!(bits_on(3), one, "three threads");
}

#[test]
fn a_meta_training_epoch_gives_the_same_weights_whether_its_steps_spread_over_the_threads_or_not() {
    // While as many stages run as the pool has threads, the steps' parallel parts (the batch
    // built beside the step, the task groups, the dense update) run on one thread
    // (`pool::spreads`); the weights must not tell the difference.
    use limaml_models::lazy_adam::Optimizers;
    use limaml_models::TrainConfig;
    let (interactions, tasks) = common::synthetic(5);
    let train = TrainConfig::default();
    let config = LimamlConfig { meta_batch: 20, ..LimamlConfig::default() };
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    let epoch_with_jobs_running = |jobs: usize| -> (u64, Vec<Vec<u32>>) {
        let (net, store) = LimamlNet::create(&config, DataShape::of(&tasks), &mut StdRng::seed_from_u64(3)).unwrap();
        let data = LimamlData::new(&interactions, &tasks, config.evaluation_support_tasks).unwrap();
        let mut optimizer = Optimizers::new(&store, &train, &net.embedding_tables()).unwrap();
        limaml_models::pool::set_jobs_running(jobs);
        let spread = pool.install(limaml_models::pool::spreads);
        let loss = pool.install(|| {
            let mut rng = StdRng::seed_from_u64(11);
            net.train_epoch(&store, &mut optimizer, &data, 64, 64, InnerGradients::FirstOrder, &mut rng).unwrap()
        });
        limaml_models::pool::set_jobs_running(0);
        assert_eq!(spread, jobs < 2, "{jobs} jobs running");
        optimizer.catch_up().unwrap();
        (loss.to_bits(), common::weight_bits(&store))
    };
    assert_eq!(epoch_with_jobs_running(2), epoch_with_jobs_running(1));
}

#[test]
fn an_unclipped_outer_step_updates_the_weights_as_the_summed_gradients_would_bit_for_bit() {
    // Without clipping, the dense parameters step from the task groups' gradients summed as the
    // optimizer reads them; a clip too large to act sums them first. 20 tasks: groups of 8, 8
    // and 4; three steps, so the moments carry over.
    use limaml_models::lazy_adam::Optimizers;
    use limaml_models::TrainConfig;
    let (interactions, tasks) = common::synthetic(5);
    let train = TrainConfig::default();
    let run = |clip: Option<f64>| -> Vec<Vec<u32>> {
        let config = LimamlConfig { meta_batch: 20, outer_gradient_clip: clip, ..LimamlConfig::default() };
        let (net, store) =
            LimamlNet::create(&config, DataShape::of(&tasks), &mut StdRng::seed_from_u64(3)).unwrap();
        let data = LimamlData::new(&interactions, &tasks, config.evaluation_support_tasks).unwrap();
        let (supports, outer) = support_and_outer_rows(&data, &config, 20);
        let batch = task_batch(&data, &supports, &outer);
        let mut optimizer = Optimizers::new(&store, &train, &net.embedding_tables()).unwrap();
        for _ in 0..3 {
            net.meta_train_step(&store, &mut optimizer, &data, &batch, InnerGradients::FirstOrder).unwrap();
        }
        optimizer.catch_up().unwrap();
        common::weight_bits(&store)
    };
    let unclipped = run(None);
    assert_eq!(unclipped, run(Some(f64::MAX)));
    assert_ne!(unclipped, run(Some(1e-3)), "a clip that acts changes the weights");
}
