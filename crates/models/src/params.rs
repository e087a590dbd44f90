//! Named parameters: seeded initialization and safetensors I/O.
//!
//! Owns [`ParamStore`], an ordered list of named candle `Var`s. Initialization draws from a
//! seeded `rand::StdRng` (candle's CPU RNG cannot be seeded), so the same seed gives the same
//! bits. Must not know what the parameters mean: models ask for them by name.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var};
use rand::rngs::StdRng;
use rand::Rng;

use crate::error::ModelError;

/// Ordered, named trainable parameters of one model.
#[derive(Debug, Clone, Default)]
pub struct ParamStore {
    names: Vec<String>,
    vars: Vec<Var>,
}

impl ParamStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// A weight matrix `fan_in x fan_out`, Glorot-uniform.
    pub fn glorot(
        &mut self,
        name: &str,
        fan_in: usize,
        fan_out: usize,
        rng: &mut StdRng,
    ) -> Result<Tensor, ModelError> {
        let bound = (6.0 / (fan_in + fan_out).max(1) as f64).sqrt() as f32;
        let values = (0..fan_in * fan_out)
            .map(|_| rng.random_range(-bound..bound))
            .collect();
        self.push(name, values, &[fan_in, fan_out])
    }

    /// An embedding table `rows x dim`, normal with standard deviation `std`.
    pub fn normal(
        &mut self,
        name: &str,
        rows: usize,
        dim: usize,
        std: f32,
        rng: &mut StdRng,
    ) -> Result<Tensor, ModelError> {
        let normal =
            rand_distr::Normal::new(0.0f32, std).map_err(|e| ModelError::Weights(e.to_string()))?;
        let values = (0..rows * dim).map(|_| rng.sample(normal)).collect();
        self.push(name, values, &[rows, dim])
    }

    /// A zero tensor of the given shape (biases, wide weights).
    pub fn zeros(&mut self, name: &str, shape: &[usize]) -> Result<Tensor, ModelError> {
        let n = shape.iter().product();
        self.push(name, vec![0.0; n], shape)
    }

    /// Adds a parameter with the given values.
    pub fn push(
        &mut self,
        name: &str,
        values: Vec<f32>,
        shape: &[usize],
    ) -> Result<Tensor, ModelError> {
        let var = Var::from_tensor(&Tensor::from_vec(values, shape, &Device::Cpu)?)?;
        self.names.push(name.to_string());
        self.vars.push(var.clone());
        Ok(var.as_tensor().clone())
    }

    pub fn vars(&self) -> &[Var] {
        &self.vars
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The current values as plain tensors, in insertion order.
    pub fn tensors(&self) -> Vec<Tensor> {
        self.vars.iter().map(|v| v.as_tensor().clone()).collect()
    }

    /// A detached copy of the current values (to keep the best epoch's weights).
    pub fn snapshot(&self) -> Result<Vec<Tensor>, ModelError> {
        Ok(self
            .vars
            .iter()
            .map(|v| v.as_tensor().copy())
            .collect::<Result<_, _>>()?)
    }

    /// Overwrites every parameter with a snapshot taken by [`ParamStore::snapshot`].
    pub fn restore(&self, snapshot: &[Tensor]) -> Result<(), ModelError> {
        for (var, value) in self.vars.iter().zip(snapshot) {
            var.set(value)?;
        }
        Ok(())
    }

    /// The parameters as a safetensors file in memory (names in insertion order).
    pub fn to_safetensors_bytes(&self) -> Result<Vec<u8>, ModelError> {
        let tensors: Vec<(String, Tensor)> = self
            .names
            .iter()
            .cloned()
            .zip(self.vars.iter().map(|v| v.as_tensor().clone()))
            .collect();
        safetensors::serialize(tensors.iter().map(|(n, t)| (n.as_str(), t)), None)
            .map_err(|e| ModelError::Weights(e.to_string()))
    }

    /// Overwrites every parameter with the same-named tensor of a safetensors buffer; each must
    /// be present with the same shape.
    pub fn load_safetensors_bytes(&self, bytes: &[u8]) -> Result<(), ModelError> {
        let loaded: HashMap<String, Tensor> =
            candle_core::safetensors::load_buffer(bytes, &Device::Cpu)?;
        for (name, var) in self.names.iter().zip(&self.vars) {
            let value = loaded
                .get(name)
                .ok_or_else(|| ModelError::Weights(format!("tensor `{name}` is missing")))?;
            if value.dims() != var.dims() || value.dtype() != DType::F32 {
                return Err(ModelError::Weights(format!(
                    "tensor `{name}` has shape {:?} {:?}, expected {:?} f32",
                    value.dims(),
                    value.dtype(),
                    var.dims()
                )));
            }
            var.set(value)?;
        }
        Ok(())
    }
}
