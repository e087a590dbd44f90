//! `global`: the non-personalized MLP over user features, item features and an item-id
//! embedding (a [`BaselineNet`] without user ids). Must not hold the network itself
//! (`baselines` does).

use rand::rngs::StdRng;

use super::baseline_network::BaselineNetwork;
use super::{Method, Network};
use crate::baselines::BaselineNet;
use crate::config::MethodConfig;
use crate::error::ModelError;
use crate::inputs::DataShape;

pub(crate) struct Global;

impl Method for Global {
    fn kind(&self) -> &'static str {
        "global"
    }

    fn create(&self, config: &MethodConfig, shape: DataShape, rng: &mut StdRng) -> Result<Box<dyn Network>, ModelError> {
        let (net, store) = BaselineNet::create(config, shape, rng)?;
        Ok(Box::new(BaselineNetwork { net, store }))
    }
}
