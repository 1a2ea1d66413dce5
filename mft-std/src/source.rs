//! Where a model comes from: a Hugging Face snapshot directory, or `random:<preset>` /
//! `random:<config.json or dir>` for random weights at real shapes (no download). Loads the
//! configuration, the weights (converted to the element type asked for) and, when there is one,
//! the tokenizer.

use std::path::{Path, PathBuf};

use mft_core::Element;
use mft_models::{Model, ModelConfig, Paging};

use crate::data::{IdsOnly, TextEncoder};
use crate::error::{Error, Result};
use crate::hf::{
    ModelWeights, checkpoint_files, load_weights, load_weights_paged, read_model_config,
};
use crate::random::random_weights;
use crate::tokenizer::Tokenizer;

/// The prefix of random-weight models.
pub const RANDOM_PREFIX: &str = "random:";

/// What `--model` names.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelSource {
    /// A snapshot directory: config.json, weights, tokenizer.
    Dir(PathBuf),
    /// Random weights for a configuration: a preset, or a config.json (its directory may hold a
    /// tokenizer).
    Random {
        /// How the user named it.
        name: String,
        /// The configuration.
        config: ModelConfig,
        /// The config.json it came from, if any.
        config_path: Option<PathBuf>,
    },
}

impl ModelSource {
    /// Parses `--model`: `random:gpt2` (a preset of [`ModelConfig::preset`]),
    /// `random:path/config.json` or `random:dir` (a config.json there), or a directory.
    ///
    /// # Errors
    /// An unknown preset, or a config.json that cannot be read.
    pub fn parse(arg: &str) -> Result<ModelSource> {
        let Some(rest) = arg.strip_prefix(RANDOM_PREFIX) else {
            return Ok(ModelSource::Dir(PathBuf::from(arg)));
        };
        if let Some(config) = ModelConfig::preset(rest) {
            return Ok(ModelSource::Random { name: arg.into(), config, config_path: None });
        }
        let path = Path::new(rest);
        let path = if path.is_dir() { path.join("config.json") } else { path.to_path_buf() };
        if !path.exists() {
            return Err(Error::Config {
                path,
                field: "--model".into(),
                problem: format!(
                    "`{rest}` is neither a preset (gpt2, gpt2-medium, qwen2.5-0.5b, gemma3-270m, \
                     gemma3-1b) nor a config.json"
                ),
            });
        }
        let config = read_model_config(&path)?;
        Ok(ModelSource::Random { name: arg.into(), config, config_path: Some(path) })
    }

    /// The directory that may hold a tokenizer and whose config.json describes the model.
    pub fn dir(&self) -> Option<&Path> {
        match self {
            ModelSource::Dir(dir) => Some(dir),
            ModelSource::Random { config_path, .. } => {
                config_path.as_deref().and_then(Path::parent)
            }
        }
    }

    /// The config.json to copy into exported snapshots.
    pub fn config_path(&self) -> Option<PathBuf> {
        match self {
            ModelSource::Dir(dir) => Some(dir.join("config.json")),
            ModelSource::Random { config_path, .. } => config_path.clone(),
        }
    }

    /// How to name the base model in adapter_config.json.
    pub fn name(&self) -> String {
        match self {
            ModelSource::Dir(dir) => dir.display().to_string(),
            ModelSource::Random { name, .. } => name.clone(),
        }
    }
}

/// A loaded model.
pub struct LoadedModel<T: 'static> {
    /// Where it came from.
    pub source: ModelSource,
    /// The model (configuration and layout).
    pub model: Model,
    /// Its weights.
    pub weights: ModelWeights<T>,
    /// Its tokenizer, when the directory has one.
    pub tokenizer: Option<Tokenizer>,
}

impl<T: 'static> LoadedModel<T> {
    /// What turns text into ids: the tokenizer, or [`IdsOnly`] when there is none.
    pub fn encoder(&self) -> &dyn TextEncoder {
        match &self.tokenizer {
            Some(t) => t,
            None => &IdsOnly,
        }
    }
}

/// Loads `source` with matrices in `T`; random models draw their weights from `seed`.
///
/// # Errors
/// A missing or bad config.json, weights or tokenizer (each naming its file).
pub fn load_model<T: Element + Send>(source: ModelSource, seed: u64) -> Result<LoadedModel<T>> {
    load(source, seed, Paging::Off)
}

/// [`load_model`] with the frozen matrices `paging` covers left in the checkpoint files, to be
/// paged in as the step needs them ([`crate::hf::load_weights_paged`]).
///
/// # Errors
/// As [`load_model`]; a random model (its weights exist only in memory).
pub fn load_model_paged<T: Element + Send>(
    source: ModelSource,
    seed: u64,
    paging: Paging,
) -> Result<LoadedModel<T>> {
    load(source, seed, paging)
}

impl ModelSource {
    /// The model's configuration, read without loading any weights.
    ///
    /// # Errors
    /// A missing or bad config.json.
    pub fn config(&self) -> Result<ModelConfig> {
        match self {
            ModelSource::Dir(dir) => read_model_config(&dir.join("config.json")),
            ModelSource::Random { config, .. } => Ok(*config),
        }
    }

    /// Bytes of the tokenizer file there is (0 when none).
    pub fn tokenizer_bytes(&self) -> u64 {
        let Some(dir) = self.dir() else { return 0 };
        ["tokenizer.json", "vocab.json"]
            .iter()
            .find_map(|name| std::fs::metadata(dir.join(name)).ok())
            .map_or(0, |m| m.len())
    }
}

fn load<T: Element + Send>(
    source: ModelSource,
    seed: u64,
    paging: Paging,
) -> Result<LoadedModel<T>> {
    let paged = paging != Paging::Off;
    let (config, weights) = match &source {
        ModelSource::Dir(dir) => {
            if !dir.is_dir() {
                return Err(Error::Checkpoint {
                    path: dir.clone(),
                    problem: "no such model directory".into(),
                });
            }
            let config_path = dir.join("config.json");
            let config = read_model_config(&config_path)?;
            let model = model_of(config, &config_path)?;
            let files = checkpoint_files(dir)?;
            let weights = if paged {
                load_weights_paged::<T>(&files, model.layout(), paging)?
            } else {
                load_weights::<T>(&files, model.layout())?
            };
            (config, weights)
        }
        ModelSource::Random { name, .. } if paged => {
            return Err(Error::Training {
                problem: format!("{name}: random weights are made in memory and are not paged"),
            });
        }
        ModelSource::Random { config, .. } => (*config, random_weights::<T>(config, seed)),
    };
    let origin = source.config_path().unwrap_or_else(|| PathBuf::from(source.name()));
    let model = model_of(config, &origin)?;
    let tokenizer = match source.dir() {
        Some(dir) if has_tokenizer(dir) => {
            let tokenizer = Tokenizer::from_dir(dir, config.family)?;
            tokenizer.check_vocab(config.vocab)?;
            Some(tokenizer)
        }
        _ => None,
    };
    Ok(LoadedModel { source, model, weights, tokenizer })
}

fn model_of(config: ModelConfig, origin: &Path) -> Result<Model> {
    Model::new(config).map_err(|source| Error::Model { path: origin.to_path_buf(), source })
}

/// Whether `dir` holds a tokenizer mft reads.
fn has_tokenizer(dir: &Path) -> bool {
    dir.join("tokenizer.json").exists() || dir.join("vocab.json").exists()
}
