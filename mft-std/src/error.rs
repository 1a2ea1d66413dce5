//! The error type of mft-std: one variant per kind of failure, each naming what failed (the
//! file, and within it the field or tensor).

use std::path::PathBuf;

/// Everything that can go wrong in mft-std.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The worker threads could not be started.
    #[error("cannot start a pool of {threads} threads: {source}")]
    ThreadPool {
        /// Threads asked for.
        threads: usize,
        /// Why rayon refused.
        source: rayon::ThreadPoolBuildError,
    },
    /// A file could not be opened, read or mapped.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// A JSON file is not valid JSON.
    #[error("{}: invalid JSON: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// Line of the error (1-based; 0 when serde_json does not know it).
        line: usize,
        /// Column of the error (1-based; 0 when serde_json does not know it).
        column: usize,
        /// What serde_json found.
        source: serde_json::Error,
    },
    /// A field of a configuration file (config.json, adapter_config.json) that is missing,
    /// malformed, or asks for something mft does not do.
    #[error("{}: {field}: {problem}", path.display())]
    Config {
        /// The file.
        path: PathBuf,
        /// The field, dotted for nested ones (`text_config.hidden_size`).
        field: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A config.json whose `model_type` is not one of the families mft trains.
    #[error(
        "{}: model_type \"{model_type}\" is not supported (supported: gpt2, qwen2, gemma3_text, gemma3)",
        path.display()
    )]
    UnsupportedModelType {
        /// The file.
        path: PathBuf,
        /// The `model_type` it names.
        model_type: String,
    },
    /// A configuration that parsed but does not describe a model (or adapter) mft can run.
    #[error("{}: {source}", path.display())]
    Model {
        /// The file.
        path: PathBuf,
        /// What mft-models refused.
        source: mft_models::Error,
    },
    /// A safetensors file whose header or layout is corrupt.
    #[error("{}: invalid safetensors file: {source}", path.display())]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What the safetensors crate found.
        source: safetensors::SafeTensorError,
    },
    /// A tensor the model needs is in none of the checkpoint's files.
    #[error("{}", missing_tensor(files, tensor))]
    MissingTensor {
        /// The files searched.
        files: Vec<PathBuf>,
        /// The tensor's name.
        tensor: String,
    },
    /// A tensor whose shape is not the one the configuration implies.
    #[error("{}: tensor {tensor} has shape {actual:?}, expected {expected:?}", path.display())]
    TensorShape {
        /// The file holding it.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// The shape the configuration implies.
        expected: Vec<usize>,
        /// The shape in the file.
        actual: Vec<usize>,
    },
    /// A tensor stored in an element type mft does not read.
    #[error("{}: tensor {tensor} is {dtype}; mft reads F32, F16 and BF16", path.display())]
    TensorDtype {
        /// The file holding it.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// The stored type, as safetensors names it.
        dtype: String,
    },
    /// A checkpoint directory without a complete set of weight files.
    #[error("{}: {problem}", path.display())]
    Checkpoint {
        /// The directory.
        path: PathBuf,
        /// What is missing.
        problem: String,
    },
    /// A tokenizer that cannot be read, or that belongs to another model family.
    #[error("{}: {problem}", path.display())]
    Tokenizer {
        /// The tokenizer file (or directory).
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// A training or evaluation data file with a bad line (or bad as a whole).
    #[error("{}", data_error(path, *line, problem))]
    Data {
        /// The data file.
        path: PathBuf,
        /// The line (1-based); 0 when the problem is the file as a whole.
        line: usize,
        /// What is wrong with it.
        problem: String,
    },
    /// An output that cannot be written as asked (an `--out` directory holding a previous run,
    /// a failed write).
    #[error("{}: {problem}", path.display())]
    Output {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// Training settings or a training step that cannot go on.
    #[error("{problem}")]
    Training {
        /// What is wrong.
        problem: String,
    },
    /// A training checkpoint that cannot be resumed from.
    #[error("{}: {problem}", path.display())]
    Resume {
        /// The checkpoint's directory.
        path: PathBuf,
        /// What does not fit.
        problem: String,
    },
    /// A checkpoint tensor that is no parameter of the model its config.json describes (a
    /// config for another model size, or weights of another model).
    #[error(
        "{}: tensor {tensor} is not a parameter of the model config.json describes",
        path.display()
    )]
    UnexpectedTensor {
        /// The file holding it.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
    },
    /// An energy or thermal policy setting that cannot be used: a flag (`origin` is
    /// `--flag VALUE`) or a policy file's field (`FILE: field`).
    #[error("{origin}: {problem}")]
    Policy {
        /// The flag and its value, or the file and the field.
        origin: String,
        /// What is wrong with it.
        problem: String,
    },
    // New variants go above this line (helpers: add with a targeted edit, never rewrite the file).
}

/// The message of [`Error::Data`]: `file:line: problem`, or `file: problem` for the whole file.
fn data_error(path: &std::path::Path, line: usize, problem: &str) -> String {
    match line {
        0 => format!("{}: {problem}", path.display()),
        n => format!("{}:{n}: {problem}", path.display()),
    }
}

/// The message of [`Error::MissingTensor`]: the one file, or every file searched.
fn missing_tensor(files: &[PathBuf], tensor: &str) -> String {
    match files {
        [one] => format!("{}: no tensor named {tensor}", one.display()),
        many => {
            let names: Vec<String> = many.iter().map(|f| f.display().to_string()).collect();
            format!("no tensor named {tensor} in any of {}", names.join(", "))
        }
    }
}

/// Result alias for mft-std.
pub type Result<T> = std::result::Result<T, Error>;
