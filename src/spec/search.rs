//! `[search]`: hyperparameter search over dotted method paths (random search or successive
//! halving over epochs), its checks, the seeded sampling of trials, and the halving schedule.
//! Owns the search's description only; the plan turns it into trial and select stages, and
//! must not plan or run anything here.
//!
//! Sampling is seeded by the search seed and the method's name, one parameter after another in
//! path order, trial after trial: the same spec gives the same trials, and a larger budget keeps
//! the first trials and adds new ones.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use limaml_models::config::MethodConfig;

use super::Spec;

/// The `[search]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchConfig {
    /// "random" (every trial trains the full `[train] epochs`) or "halving" (successive halving:
    /// every trial trains a small budget of epochs, the best 1/`eta` go on, resumed from their
    /// models, until the survivors reach the full budget).
    #[serde(default)]
    pub strategy: Strategy,
    /// Trials per method: the same budget for every method unless `method_trials` says otherwise.
    pub trials: usize,
    /// Per-method budgets that replace `trials` (`method_trials = { logistic = 2 }`).
    #[serde(default)]
    pub method_trials: BTreeMap<String, usize>,
    /// A validation metric (`validation.<metric>`); its direction comes from the registry.
    #[serde(default = "default_objective")]
    pub objective: String,
    /// The seed trials are sampled with and trained on (default: the experiment's first seed).
    #[serde(default)]
    pub seed: Option<u64>,
    /// Halving only: each rung keeps the best 1/eta of its trials.
    #[serde(default = "default_eta")]
    pub eta: usize,
    /// Dotted method path -> distribution (`"methods.limaml.inner_lr" = { loguniform = [0.05, 2.0] }`).
    pub space: BTreeMap<String, Distribution>,
}

fn default_objective() -> String {
    "validation.auc".into()
}

fn default_eta() -> usize {
    3
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    #[default]
    Random,
    Halving,
}

impl Strategy {
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Random => "random",
            Strategy::Halving => "halving",
        }
    }
}

/// Where one parameter's values are drawn from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Distribution {
    /// Uniform on `[low, high)`.
    Uniform([f64; 2]),
    /// Log-uniform on `[low, high)`, both positive.
    Loguniform([f64; 2]),
    /// A uniform integer in `low..=high`.
    Int([i64; 2]),
    /// One of the listed values, each equally likely.
    Choice(#[schemars(with = "Vec<serde_json::Value>")] Vec<toml::Value>),
}

impl Distribution {
    fn draw(&self, rng: &mut StdRng) -> serde_json::Value {
        match self {
            Distribution::Uniform([low, high]) => serde_json::json!(low + (high - low) * rng.random::<f64>()),
            Distribution::Loguniform([low, high]) => {
                let (a, b) = (low.ln(), high.ln());
                serde_json::json!((a + (b - a) * rng.random::<f64>()).exp())
            }
            Distribution::Int([low, high]) => serde_json::json!(rng.random_range(*low..=*high)),
            Distribution::Choice(values) => {
                to_json(&values[rng.random_range(0..values.len())])
            }
        }
    }

    /// Values at the edges of the distribution, checked against the method's types.
    fn probes(&self) -> Vec<serde_json::Value> {
        match self {
            Distribution::Uniform([low, high]) | Distribution::Loguniform([low, high]) => {
                vec![serde_json::json!(low), serde_json::json!(high)]
            }
            Distribution::Int([low, high]) => vec![serde_json::json!(low), serde_json::json!(high)],
            Distribution::Choice(values) => values.iter().map(to_json).collect(),
        }
    }

    /// Why the distribution is unusable, if it is.
    fn problem(&self) -> Option<String> {
        match self {
            Distribution::Uniform([low, high]) | Distribution::Loguniform([low, high])
                if !(low.is_finite() && high.is_finite()) =>
            {
                Some("bounds must be finite numbers".into())
            }
            Distribution::Uniform([low, high]) if low >= high => {
                Some(format!("empty or inverted range [{low}, {high}]: the low bound must be below the high one"))
            }
            Distribution::Loguniform([low, high]) if *low <= 0.0 || *high <= 0.0 => {
                Some(format!("loguniform bounds must be positive, got [{low}, {high}]"))
            }
            Distribution::Loguniform([low, high]) if low >= high => {
                Some(format!("empty or inverted range [{low}, {high}]: the low bound must be below the high one"))
            }
            Distribution::Int([low, high]) if low >= high => {
                Some(format!("empty or inverted range [{low}, {high}]: the low bound must be below the high one"))
            }
            Distribution::Choice(values) if values.is_empty() => Some("choice needs at least one value".into()),
            _ => None,
        }
    }
}

fn to_json(value: &toml::Value) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or(serde_json::Value::Null)
}

/// One trial's parameters: dotted path under the method (`inner_lr`) -> value.
pub type TrialParams = BTreeMap<String, serde_json::Value>;

impl SearchConfig {
    /// The paths of the space under `methods.<method>`, relative to it, with their distributions.
    pub fn space_for(&self, method: &str) -> Vec<(String, &Distribution)> {
        let prefix = format!("methods.{method}.");
        self.space.iter().filter_map(|(path, d)| Some((path.strip_prefix(&prefix)?.to_string(), d))).collect()
    }

    /// The trial budget of `method`.
    pub fn trials_for(&self, method: &str) -> usize {
        self.method_trials.get(method).copied().unwrap_or(self.trials)
    }

    /// The metric name inside the validation block (`auc` for `validation.auc`).
    pub fn objective_metric(&self) -> &str {
        self.objective.strip_prefix("validation.").unwrap_or(&self.objective)
    }

    pub fn lower_is_better(&self) -> bool {
        limaml_models::eval::lower_is_better(self.objective_metric())
    }

    /// The first `n` trials of `method`, each drawn parameter after parameter in path order from
    /// one stream seeded by `seed` and the method's name.
    pub fn sample(&self, method: &str, seed: u64) -> Vec<TrialParams> {
        let space = self.space_for(method);
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"limaml search v1\0");
        hasher.update(&seed.to_le_bytes());
        hasher.update(method.as_bytes());
        let digest = hasher.finalize();
        let mut rng = StdRng::from_seed(*digest.as_bytes());
        (0..self.trials_for(method))
            .map(|_| space.iter().map(|(path, d)| (path.clone(), d.draw(&mut rng))).collect())
            .collect()
    }
}

/// `method` with each path of `params` set to its value (re-read through the method's types).
pub fn apply(method: &MethodConfig, params: &TrialParams) -> Result<MethodConfig, String> {
    let mut value = serde_json::to_value(method).map_err(|e| e.to_string())?;
    for (path, v) in params {
        let mut current = &mut value;
        let parts: Vec<&str> = path.split('.').collect();
        for (i, part) in parts.iter().enumerate() {
            let object = current.as_object_mut().ok_or_else(|| format!("`{}` is not a table", parts[..i].join(".")))?;
            if !object.contains_key(*part) {
                return Err(format!("the method has no parameter `{}`", parts[..=i].join(".")));
            }
            current = object.get_mut(*part).expect("checked");
        }
        *current = v.clone();
    }
    serde_json::from_value(value).map_err(|e| e.to_string())
}

/// One rung of successive halving: how many trials train to how many epochs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rung {
    pub trials: usize,
    pub epochs: usize,
}

/// The rungs of successive halving for `n` trials, full budget `epochs` and reduction `eta`:
/// `s + 1` rungs, `s = min(floor(log_eta n), floor(log_eta epochs))`; rung k keeps
/// `floor(n / eta^k)` trials (at least one) and trains them to `epochs / eta^(s - k)` epochs, the
/// last rung to the full budget. One rung (plain random search) when n or epochs is below eta.
pub fn halving_rungs(n: usize, epochs: usize, eta: usize) -> Vec<Rung> {
    let log = |mut x: usize| {
        let mut k = 0;
        while x >= eta {
            x /= eta;
            k += 1;
        }
        k
    };
    let s = log(n).min(log(epochs)) as u32;
    (0..=s)
        .map(|k| Rung {
            trials: (n / eta.pow(k)).max(1),
            epochs: if k == s { epochs } else { (epochs / eta.pow(s - k)).max(1) },
        })
        .collect()
}

/// The search's issues as (key, message), for the spec's validation.
pub fn validate(spec: &Spec) -> Vec<(String, String)> {
    let Some(search) = &spec.search else { return Vec::new() };
    let mut issues = Vec::new();
    if search.trials == 0 {
        issues.push(("search.trials".into(), "the budget must be at least 1 trial".into()));
    }
    for (method, &trials) in &search.method_trials {
        let key = format!("search.method_trials.{method}");
        if !spec.methods.contains_key(method) {
            issues.push((key, unknown_method(spec, method)));
        } else if trials == 0 {
            issues.push((key, "the budget must be at least 1 trial".into()));
        }
    }
    if search.eta < 2 {
        issues.push(("search.eta".into(), "must be at least 2 (each rung keeps the best 1/eta)".into()));
    }
    let eval = limaml_models::EvalConfig { catalogue: false, ..spec.report.eval_config() };
    let known = limaml_models::eval::metric_names(&eval);
    match search.objective.strip_prefix("validation.") {
        Some(metric) if known.iter().any(|k| k == metric) => {}
        _ => {
            let mut message = format!(
                "the objective must be a validation metric, `validation.<metric>` with <metric> one of {}",
                known.join(", ")
            );
            let base = search.objective.rsplit('.').next().unwrap_or("");
            if let Some(s) = super::did_you_mean(base, known.iter().map(String::as_str)) {
                message.push_str(&format!(" (did you mean `validation.{s}`?)"));
            }
            issues.push(("search.objective".into(), message));
        }
    }
    if search.space.is_empty() {
        issues.push(("search.space".into(), "needs at least one parameter path".into()));
    }
    for (path, distribution) in &search.space {
        let key = format!("search.space.{path}");
        let mut parts = path.splitn(3, '.');
        let (Some("methods"), Some(method), Some(field)) = (parts.next(), parts.next(), parts.next()) else {
            issues.push((key, format!("unknown path `{path}`: search paths name a method parameter, `methods.<name>.<parameter>`")));
            continue;
        };
        let Some(config) = spec.methods.get(method) else {
            issues.push((key, format!("unknown path `{path}`: {}", unknown_method(spec, method))));
            continue;
        };
        if field == "kind" {
            issues.push((key, "a search cannot change a method's kind".into()));
            continue;
        }
        if let Some(problem) = distribution.problem() {
            issues.push((key, problem));
            continue;
        }
        for probe in distribution.probes() {
            let params = TrialParams::from([(field.to_string(), probe.clone())]);
            let problem = match apply(config, &params) {
                Err(e) if e.starts_with("the method has no parameter") => {
                    let fields = serde_json::to_value(config).ok();
                    let names: Vec<String> = fields
                        .as_ref()
                        .and_then(|v| v.as_object())
                        .map(|o| o.keys().filter(|k| k.as_str() != "kind").cloned().collect())
                        .unwrap_or_default();
                    let mut message = format!("unknown path `{path}`: {e}");
                    if let Some(s) = super::did_you_mean(field, names.iter().map(String::as_str)) {
                        message.push_str(&format!(" (did you mean `methods.{method}.{s}`?)"));
                    }
                    Some(message)
                }
                Err(e) => Some(format!("the value {probe} does not fit `{path}`: {e}")),
                Ok(applied) => applied.validate().into_iter().next().map(|issue| {
                    format!("the value {probe} is out of range for `{path}`: {}", issue.message)
                }),
            };
            if let Some(problem) = problem {
                issues.push((key.clone(), problem));
                break;
            }
        }
    }
    issues
}

fn unknown_method(spec: &Spec, method: &str) -> String {
    let names: Vec<&str> = spec.methods.keys().map(String::as_str).collect();
    let mut message = format!("no method `{method}`; the spec has {}", names.join(", "));
    if let Some(s) = super::did_you_mean(method, names.iter().copied()) {
        message.push_str(&format!(" (did you mean `{s}`?)"));
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(space: &[(&str, Distribution)], trials: usize) -> SearchConfig {
        SearchConfig {
            strategy: Strategy::Random,
            trials,
            method_trials: BTreeMap::new(),
            objective: default_objective(),
            seed: None,
            eta: 3,
            space: space.iter().map(|(p, d)| (p.to_string(), d.clone())).collect(),
        }
    }

    #[test]
    fn a_larger_budget_keeps_the_first_trials() {
        let space = [("methods.m.lr", Distribution::Loguniform([0.01, 1.0])), ("methods.m.k", Distribution::Int([1, 5]))];
        let small = config(&space, 3).sample("m", 7);
        let large = config(&space, 6).sample("m", 7);
        assert_eq!(small[..], large[..3]);
        assert_ne!(large[3], large[4]);
    }

    #[test]
    fn samples_stay_inside_their_bounds() {
        let space = [("methods.m.lr", Distribution::Loguniform([0.05, 2.0])), ("methods.m.k", Distribution::Int([1, 5]))];
        for trial in config(&space, 50).sample("m", 1) {
            let lr = trial["lr"].as_f64().unwrap();
            let k = trial["k"].as_i64().unwrap();
            assert!((0.05..2.0).contains(&lr), "{lr}");
            assert!((1..=5).contains(&k), "{k}");
        }
    }

    #[test]
    fn methods_draw_from_streams_of_their_own() {
        let space = [("methods.a.lr", Distribution::Uniform([0.0, 1.0])), ("methods.b.lr", Distribution::Uniform([0.0, 1.0]))];
        let search = config(&space, 2);
        assert_ne!(search.sample("a", 1), search.sample("b", 1));
        assert!(search.sample("c", 1).iter().all(|t| t.is_empty()));
    }

    #[test]
    fn halving_keeps_a_third_per_rung_and_ends_at_the_full_budget() {
        assert_eq!(
            halving_rungs(9, 18, 3),
            vec![Rung { trials: 9, epochs: 2 }, Rung { trials: 3, epochs: 6 }, Rung { trials: 1, epochs: 18 }]
        );
        assert_eq!(halving_rungs(2, 20, 3), vec![Rung { trials: 2, epochs: 20 }]);
        assert_eq!(halving_rungs(8, 20, 2).last(), Some(&Rung { trials: 1, epochs: 20 }));
    }
}
