//! `id_embedding`: the global MLP plus a learned user-id embedding (and its optional serve-time
//! refresh), a [`BaselineNet`]. Must not hold the network itself
//! (`baselines` does).

use rand::rngs::StdRng;

use super::baseline_network::BaselineNetwork;
use super::{Method, Network};
use crate::baselines::BaselineNet;
use crate::config::MethodConfig;
use crate::error::ModelError;
use crate::inputs::DataShape;

pub(crate) struct IdEmbedding;

impl Method for IdEmbedding {
    fn kind(&self) -> &'static str {
        "id_embedding"
    }

    fn create(&self, config: &MethodConfig, shape: DataShape, rng: &mut StdRng) -> Result<Box<dyn Network>, ModelError> {
        let (net, store) = BaselineNet::create(config, shape, rng)?;
        Ok(Box::new(BaselineNetwork { net, store }))
    }
}
