//! `wide_deep`: Wide & Deep, a wide linear part over one-hot ids and hashed crosses plus the
//! deep MLP of `id_embedding`, a [`BaselineNet`]. Must not hold the network itself
//! (`baselines` does).

use rand::rngs::StdRng;

use super::baseline_network::BaselineNetwork;
use super::{Method, Network};
use crate::baselines::BaselineNet;
use crate::config::MethodConfig;
use crate::error::ModelError;
use crate::inputs::DataShape;

pub(crate) struct WideDeep;

impl Method for WideDeep {
    fn kind(&self) -> &'static str {
        "wide_deep"
    }

    fn create(&self, config: &MethodConfig, shape: DataShape, rng: &mut StdRng) -> Result<Box<dyn Network>, ModelError> {
        let (net, store) = BaselineNet::create(config, shape, rng)?;
        Ok(Box::new(BaselineNetwork { net, store }))
    }
}
