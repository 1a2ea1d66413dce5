//! The one error type of mft-models: configurations it refuses (an unknown `model_type` is
//! refused by [`crate::Family::from_model_type`], whose caller names it), LoRA targets a family lacks, and
//! buffers too small for the memory plan. Each variant names the field or buffer at fault.

use core::fmt;

/// Result alias for mft-models.
pub type Result<T> = core::result::Result<T, Error>;

/// Everything that can go wrong in mft-models.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A configuration field whose value cannot describe a model mft can run.
    InvalidConfig {
        /// The field, as Hugging Face's config.json names it.
        field: &'static str,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// A LoRA target module the family does not have.
    UnknownLoraTarget {
        /// The family's `model_type`.
        family: &'static str,
    },
    /// An invalid LoRA setting.
    InvalidLora {
        /// The setting (`r`, `lora_alpha`, `lora_dropout`, `target_modules`).
        field: &'static str,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// A buffer the caller passed is not the size the plan says.
    BufferSize {
        /// Which buffer.
        buffer: &'static str,
        /// Elements expected.
        expected: usize,
        /// Elements given.
        actual: usize,
    },
    /// A batch that does not fit the model (sequence too long, a token id out of range).
    InvalidBatch {
        /// What is wrong with it.
        problem: &'static str,
        /// The offending value.
        value: usize,
        /// The limit it broke.
        limit: usize,
    },
    /// A combination of inputs the model does not run.
    Unsupported {
        /// What it is.
        what: &'static str,
    },
    /// A [`crate::BlockSource`] could not supply a part of the weights (it keeps the reason).
    Paging {
        /// The part asked for.
        page: crate::Page,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::InvalidConfig { field, problem } => write!(f, "config field {field}: {problem}"),
            Error::UnknownLoraTarget { family } => {
                write!(f, "target_modules names a module {family} does not have")
            }
            Error::InvalidLora { field, problem } => write!(f, "LoRA {field}: {problem}"),
            Error::BufferSize { buffer, expected, actual } => {
                write!(f, "{buffer} holds {actual} elements, the memory plan needs {expected}")
            }
            Error::InvalidBatch { problem, value, limit } => {
                write!(f, "batch: {problem} ({value}, limit {limit})")
            }
            Error::Unsupported { what } => write!(f, "not supported: {what}"),
            Error::Paging { page } => match page {
                crate::Page::Block(layer) => {
                    write!(f, "the matrices of block {layer} could not be paged in")
                }
                crate::Page::Head { first, rows } => {
                    write!(f, "the head's rows {first}..{} could not be paged in", first + rows)
                }
                crate::Page::EmbeddingRows => {
                    write!(f, "the token embedding's rows could not be paged in")
                }
            },
        }
    }
}

impl core::error::Error for Error {}
