//! Specifications of lazy Adam on id tables: replaying a row's skipped steps when it is read
//! again gives the weights of stepping every row every step (rows not read with a zero
//! gradient, as dense AdamW does), however rarely a row is read.

use candle_core::{Device, Tensor};
use limaml_models::config::TrainConfig;
use limaml_models::lazy_adam::{gradient_store, Optimizers};
use limaml_models::params::ParamStore;
use rand::rngs::StdRng;
use rand::SeedableRng;

/// Rows of the table and its width.
const ROWS: usize = 6;
const DIM: usize = 4;

/// Whether row `row` is read at step `step` (from 1): row 0 every step, the others every
/// 7th, 97th, 1009th step, row 4 at steps 3 and 44 000 only (a skip longer than the replay
/// limit), row 5 never (weight decay alone moves it).
fn reads(row: usize, step: usize) -> bool {
    match row {
        0 => true,
        1 => step.is_multiple_of(7),
        2 => step.is_multiple_of(97),
        3 => step.is_multiple_of(1009),
        4 => step == 3 || step == 44_000,
        _ => false,
    }
}

/// A fixed gradient for `row`, column `col` at `step`.
fn gradient(row: usize, col: usize, step: usize) -> f32 {
    ((step * 31 + row * 7 + col) as f32 * 0.37).sin() * 0.1
}

/// Steps `optimizer` (table 0 of its store) with the gradients of `step`: the rows read then,
/// or (`every_row`) every row, the unread ones with a zero gradient.
fn step(optimizer: &mut Optimizers, step: usize, every_row: bool) {
    let read: Vec<u32> = (0..ROWS).filter(|&r| every_row || reads(r, step)).map(|r| r as u32).collect();
    let gathered = optimizer.gather(0, read.iter().copied()).unwrap();
    let values: Vec<f32> = gathered
        .rows
        .iter()
        .flat_map(|&r| {
            let r = r as usize;
            (0..DIM).map(move |c| if reads(r, step) { gradient(r, c, step) } else { 0.0 })
        })
        .collect();
    let mut grads = gradient_store().unwrap();
    grads.insert(gathered.values.as_tensor(), Tensor::from_vec(values, (gathered.rows.len(), DIM), &Device::Cpu).unwrap());
    optimizer.step_with(&grads, std::slice::from_ref(&gathered)).unwrap();
}

fn table_values(store: &ParamStore) -> Vec<f32> {
    store.vars()[0].as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

#[test]
fn replaying_skipped_steps_gives_the_weights_of_stepping_every_row_past_the_bias_correction_steady_state() {
    // 45 000 steps: past step ~37 000, where Adam's bias corrections are exactly 1 and the
    // replay of skipped steps takes its shared sums. The reference steps every row every step
    // (zero gradients for the rows not read), the update dense AdamW makes.
    let steps = 45_000;
    let train = TrainConfig { learning_rate: 1e-3, l2: 1e-2, ..TrainConfig::default() };
    let table = |seed| {
        let mut store = ParamStore::new();
        store.normal("table", ROWS, DIM, 0.5, &mut StdRng::seed_from_u64(seed)).unwrap();
        store
    };
    let (lazy_store, every_row_store) = (table(3), table(3));
    let initial = table_values(&lazy_store);
    let mut lazy = Optimizers::new(&lazy_store, &train, &[0]).unwrap();
    let mut every_row = Optimizers::new(&every_row_store, &train, &[0]).unwrap();
    for k in 1..=steps {
        step(&mut lazy, k, false);
        step(&mut every_row, k, true);
    }
    lazy.catch_up().unwrap();
    let (lazy_values, reference) = (table_values(&lazy_store), table_values(&every_row_store));
    for (k, ((l, r), i)) in lazy_values.iter().zip(&reference).zip(&initial).enumerate() {
        // Every row moved (weight decay at least), and the replay moved it as stepping did.
        assert!((r - i).abs() > 1e-3, "row {} did not move", k / DIM);
        assert!((l - r).abs() <= 1e-5 * r.abs().max(1.0), "row {} col {}: lazy {l}, every row {r}", k / DIM, k % DIM);
    }
}

/// The weights' bits after `steps` steps of this dense optimizer and of candle-nn's `AdamW` from
/// the same `rows x cols` weights (drawn with `seed`), each step's gradient `gradient(step, k)`.
fn dense_and_candle_adamw_bits(
    (rows, cols): (usize, usize),
    seed: u64,
    steps: usize,
    gradient: impl Fn(usize, usize) -> f32,
) -> (Vec<u32>, Vec<u32>) {
    use candle_nn::{AdamW, Optimizer, ParamsAdamW};
    let train = TrainConfig { learning_rate: 3e-3, l2: 1e-2, ..TrainConfig::default() };
    let mut store = ParamStore::new();
    store.normal("weights", rows, cols, 0.5, &mut StdRng::seed_from_u64(seed)).unwrap();
    let mut ours = Optimizers::new(&store, &train, &[]).unwrap();
    let reference_var = candle_core::Var::from_tensor(&store.vars()[0].as_tensor().copy().unwrap()).unwrap();
    let params = ParamsAdamW { lr: 3e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 1e-2 };
    let mut reference = AdamW::new(vec![reference_var.clone()], params).unwrap();
    for step in 1..=steps {
        let values: Vec<f32> = (0..rows * cols).map(|k| gradient(step, k)).collect();
        let gradient = Tensor::from_vec(values, (rows, cols), &Device::Cpu).unwrap();
        let mut grads = gradient_store().unwrap();
        grads.insert(store.vars()[0].as_tensor(), gradient.clone());
        ours.step_with(&grads, &[]).unwrap();
        let mut grads = gradient_store().unwrap();
        grads.insert(reference_var.as_tensor(), gradient);
        reference.step(&grads).unwrap();
    }
    let bits = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    (bits(store.vars()[0].as_tensor()), bits(reference_var.as_tensor()))
}

/// Gradients of every sign and size, some exactly zero.
fn mixed_gradient(step: usize, k: usize) -> f32 {
    if k.is_multiple_of(11) {
        0.0
    } else {
        ((k * 7 + step * 13) as f32 * 0.01).sin() * 10f32.powi((k % 5) as i32 - 3)
    }
}

#[test]
fn the_dense_optimizer_is_candles_adamw_bit_for_bit() {
    // Two parallel chunks; the second shape also leaves a tail shorter than a vector register.
    for shape in [(300, 70), (301, 67)] {
        let (ours, candle) = dense_and_candle_adamw_bits(shape, 5, 40, mixed_gradient);
        assert_eq!(ours, candle, "{shape:?}");
    }
}

#[test]
fn the_dense_optimizer_is_candles_adamw_bit_for_bit_after_its_moments_underflow() {
    // The gradient stops after 5 steps: over the next 1 500 the first moments decay through
    // the subnormal range (which this optimizer stores as zero) while the weights keep decaying.
    let gradient = |step: usize, k: usize| if step > 5 { 0.0 } else { mixed_gradient(step, k) };
    let (ours, candle) = dense_and_candle_adamw_bits((40, 10), 6, 1_505, gradient);
    assert_eq!(ours, candle);
}

/// The weights' bits after one step of this dense optimizer from `gradient_of(weights)` and of
/// candle-nn's `AdamW` from a copy of the same gradient.
fn one_step_bits(gradient_of: impl Fn(&Tensor) -> Tensor) -> (Vec<u32>, Vec<u32>) {
    use candle_nn::{AdamW, Optimizer, ParamsAdamW};
    let train = TrainConfig { learning_rate: 3e-3, l2: 1e-2, ..TrainConfig::default() };
    let mut store = ParamStore::new();
    store.normal("weights", 30, 7, 0.5, &mut StdRng::seed_from_u64(3)).unwrap();
    let mut ours = Optimizers::new(&store, &train, &[]).unwrap();
    let weights = store.vars()[0].as_tensor().clone();
    let reference_var = candle_core::Var::from_tensor(&weights.copy().unwrap()).unwrap();
    let params = ParamsAdamW { lr: 3e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 1e-2 };
    let mut reference = AdamW::new(vec![reference_var.clone()], params).unwrap();
    let mut grads = gradient_store().unwrap();
    grads.insert(reference_var.as_tensor(), gradient_of(&weights).copy().unwrap());
    reference.step(&grads).unwrap();
    let mut grads = gradient_store().unwrap();
    grads.insert(&weights, gradient_of(&weights));
    ours.step_with(&grads, &[]).unwrap();
    let bits = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    (bits(&weights), bits(reference_var.as_tensor()))
}

#[test]
fn a_gradient_sharing_its_variables_storage_steps_without_waiting_on_itself() {
    // The gradient is the weights themselves: borrowing it would hold a read lock on what the
    // in-place update locks for writing (a hang); it is copied out first.
    let (ours, candle) = one_step_bits(|weights| weights.clone());
    assert_eq!(ours, candle);
}

#[test]
fn a_non_contiguous_gradient_is_read_in_its_logical_order() {
    let (ours, candle) = one_step_bits(|weights| {
        let (rows, cols) = weights.dims2().unwrap();
        let values: Vec<f32> = (0..rows * cols).map(|k| mixed_gradient(1, k)).collect();
        Tensor::from_vec(values, (cols, rows), &Device::Cpu).unwrap().t().unwrap()
    });
    assert_eq!(ours, candle);
}

#[test]
fn stepping_from_gradient_parts_is_stepping_from_their_sum_bit_for_bit() {
    for large in [(131, 127), (300, 230)] {
        parts_and_sum_bits_agree(large);
    }
}

fn parts_and_sum_bits_agree(large: (usize, usize)) {
    use limaml_models::lazy_adam::GradientParts;
    // Parameters in four chunks or more update side by side, fewer one after the other: both
    // ways, with a parameter larger than a chunk (16 384) and a short tail, a small one and one
    // left without a gradient; three parts each, summed in order.
    let train = TrainConfig { learning_rate: 3e-3, l2: 1e-2, ..TrainConfig::default() };
    let build = || {
        let mut store = ParamStore::new();
        store.normal("large", large.0, large.1, 0.5, &mut StdRng::seed_from_u64(1)).unwrap();
        store.normal("small", 3, 5, 0.5, &mut StdRng::seed_from_u64(2)).unwrap();
        store.normal("untouched", 4, 4, 0.5, &mut StdRng::seed_from_u64(3)).unwrap();
        store
    };
    let (parted, summed) = (build(), build());
    let mut from_parts = Optimizers::new(&parted, &train, &[]).unwrap();
    let mut from_sum = Optimizers::new(&summed, &train, &[]).unwrap();
    for step in 1..=4 {
        // The first two parts cancel exactly, so adding them in another order (the third to
        // the second first) loses most of the third's bits.
        let part = |var: usize, p: usize, n: usize| -> Vec<f32> {
            (0..n)
                .map(|k| match p {
                    0 => 1e4 * (1.0 + (k % 7) as f32),
                    1 => -1e4 * (1.0 + (k % 7) as f32),
                    _ => mixed_gradient(step, k * (var + 1)),
                })
                .collect()
        };
        let mut parts_of = Vec::new();
        let mut grads = gradient_store().unwrap();
        for var in 0..2 {
            let n = summed.vars()[var].as_tensor().elem_count();
            let parts: Vec<Vec<f32>> = (0..3).map(|p| part(var, p, n)).collect();
            let sum: Vec<f32> = (0..n).map(|k| (parts[0][k] + parts[1][k]) + parts[2][k]).collect();
            let shape = summed.vars()[var].as_tensor().shape().clone();
            grads.insert(summed.vars()[var].as_tensor(), Tensor::from_vec(sum, shape, &Device::Cpu).unwrap());
            parts_of.push(parts);
        }
        let given: Vec<GradientParts> = parts_of
            .iter()
            .enumerate()
            .map(|(var, parts)| GradientParts {
                var: parted.vars()[var].as_tensor(),
                parts: parts.iter().map(Vec::as_slice).collect(),
            })
            .collect();
        from_parts.step_with_parts(&gradient_store().unwrap(), &given, &[]).unwrap();
        from_sum.step_with(&grads, &[]).unwrap();
    }
    let bits = |store: &ParamStore| -> Vec<Vec<u32>> {
        store
            .vars()
            .iter()
            .map(|v| v.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|x| x.to_bits()).collect())
            .collect()
    };
    let (a, b) = (bits(&parted), bits(&summed));
    assert_eq!(a, b, "{large:?}");
    assert_ne!(a[0], bits(&build())[0], "the large parameter moved");
}

#[test]
fn gradient_parts_of_the_wrong_length_are_an_error() {
    use limaml_models::lazy_adam::GradientParts;
    let mut store = ParamStore::new();
    store.normal("weights", 4, 3, 0.5, &mut StdRng::seed_from_u64(1)).unwrap();
    let mut optimizer = Optimizers::new(&store, &TrainConfig::default(), &[]).unwrap();
    let short = [0.5f32; 11];
    let given = [GradientParts { var: store.vars()[0].as_tensor(), parts: vec![&short[..]] }];
    assert!(optimizer.step_with_parts(&gradient_store().unwrap(), &given, &[]).is_err());
}
