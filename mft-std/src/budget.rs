//! `--mem-budget`: before training, decide what stays resident, what is paged and how many
//! blocks are checkpointed so that the whole process stays inside a memory budget; refuse a
//! budget nothing fits, naming the smallest one that would.
//!
//! The estimate adds what the step allocates (the figures of [`mft_models::MemoryPlan`] and the
//! workspace the trainer carves, which are exact) to a fixed allowance for the process itself
//! (code, the thread pool's stacks, the allocator, data and tokenizer):
//! [`PROCESS_ALLOWANCE`] plus three times the tokenizer file. Options are tried from the
//! fastest (see [`plan`]): everything resident; the blocks' frozen matrices paged from the
//! checkpoint through two slots; the token embedding and the head paged too (the head one
//! vocabulary chunk at a time, through the same slots); the batch split into smaller
//! micro-batches; and only then checkpointed blocks, more and more of them.

use std::fmt;

use mft_core::DType;
use mft_kernels::{Kernels, LmHeadLoss};
use mft_models::{LoraLayout, Model, Paging, Param, ParamLayout, Purpose};

use crate::error::{Error, Result};

/// What the process needs besides the step's own buffers (measured: `mft finetune` of the
/// bundled demo peaks at 28 MB, with a 1 MB model).
pub const PROCESS_ALLOWANCE: u64 = 32 << 20;

/// A size given on the command line: `200MiB`, `1GiB`, `512MB`, `1.5GB`, or bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemBudget(pub u64);

impl std::str::FromStr for MemBudget {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<MemBudget, String> {
        let trimmed = text.trim();
        let split =
            trimmed.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(trimmed.len());
        let (number, unit) = trimmed.split_at(split);
        let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1_000,
            "kib" => 1 << 10,
            "m" | "mb" => 1_000_000,
            "mib" => 1 << 20,
            "g" | "gb" => 1_000_000_000,
            "gib" => 1 << 30,
            other => {
                return Err(format!(
                    "unknown unit \"{other}\" (use B, KiB, MiB, GiB, KB, MB or GB)"
                ));
            }
        };
        let value: f64 =
            number.parse().map_err(|_| format!("\"{text}\" is not a size like 256MiB"))?;
        if !(value.is_finite() && value > 0.0) {
            return Err(format!("\"{text}\" is not a positive size"));
        }
        Ok(MemBudget((value * scale as f64) as u64))
    }
}

impl fmt::Display for MemBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", mib(self.0))
    }
}

/// `bytes` as MiB, one decimal.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
}

/// What a run looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepShape {
    /// Sequences per micro-batch, as asked for.
    pub batch: usize,
    /// Tokens per sequence.
    pub seq: usize,
    /// Worker threads.
    pub threads: usize,
    /// Bytes of the tokenizer file (0 without one).
    pub tokenizer_bytes: u64,
    /// Training steps (else evaluation only: no gradients, no optimizer, no checkpointing).
    pub training: bool,
}

/// The decision, and the estimate behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetPlan {
    /// Which frozen matrices are paged in from the checkpoint.
    pub paging: Paging,
    /// Blocks checkpointed (from the first).
    pub checkpointed_blocks: usize,
    /// Sequences per micro-batch: the asked batch, or a divisor of it when the batch is split
    /// into more micro-batches (accumulated into the same optimizer step).
    pub micro_batch: usize,
    /// The estimate, part by part.
    pub parts: Vec<(&'static str, u64)>,
}

impl BudgetPlan {
    /// The estimated peak.
    pub fn total(&self) -> u64 {
        self.parts.iter().map(|p| p.1).sum()
    }
}

impl fmt::Display for BudgetPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let weights = match self.paging {
            Paging::Off => "weights resident",
            Paging::Blocks => "blocks paged",
            Paging::BlocksAndEmbeddings => "frozen blocks and embeddings paged",
        };
        write!(
            f,
            "{weights}, {} blocks checkpointed, micro-batches of {}; estimated peak {} (",
            self.checkpointed_blocks,
            self.micro_batch,
            mib(self.total())
        )?;
        let parts: Vec<String> =
            self.parts.iter().map(|(name, b)| format!("{name} {}", mib(*b))).collect();
        write!(f, "{})", parts.join(", "))
    }
}

/// The fastest plan for `model` trained with `lora` (None: full fine-tuning) over matrices of
/// `frozen` that fits `budget`, with at least `min_checkpointed` blocks checkpointed.
/// `can_page` says whether the weights are in files they can be paged from.
///
/// Options are tried from the fastest (measured on GPT-2 small, see BENCHMARKS.md). Paging
/// costs reads (on the I/O thread, during the compute) and checkpointing costs recomputation,
/// which is dearer; so first, with no block checkpointed: every weight resident, the blocks
/// paged, the embeddings paged too, each at the asked batch and then at smaller and smaller
/// micro-batches (each of which reads the paged matrices again); then the same options with
/// more and more checkpointed blocks.
///
/// # Errors
/// [`Error::Training`] when nothing fits, naming the smallest budget that would.
pub fn plan(
    model: &Model,
    lora: Option<&LoraLayout>,
    frozen: DType,
    shape: StepShape,
    min_checkpointed: usize,
    can_page: bool,
    budget: MemBudget,
) -> Result<BudgetPlan> {
    let layers = model.config().layers;
    // Full fine-tuning pages the blocks (weights, gradients and moments) but keeps the trained
    // embeddings and head.
    let full_training = lora.is_none() && shape.training;
    let levels: &[Paging] = match (can_page, full_training) {
        (false, _) => &[Paging::Off],
        (true, true) => &[Paging::Off, Paging::Blocks],
        (true, false) => &[Paging::Off, Paging::Blocks, Paging::BlocksAndEmbeddings],
    };
    let most = if shape.training { layers } else { 0 };
    let micro_batches: Vec<usize> =
        (1..=shape.batch).rev().filter(|m| shape.batch.is_multiple_of(*m)).collect();
    let mut candidates = Vec::new();
    for checkpointed_blocks in min_checkpointed.min(most)..=most {
        for &micro_batch in &micro_batches {
            for &paging in levels {
                let micro = StepShape { batch: micro_batch, ..shape };
                candidates.push(estimate(model, lora, frozen, micro, checkpointed_blocks, paging));
            }
        }
    }
    if let Some(fits) = candidates.iter().find(|c| c.total() <= budget.0) {
        return Ok(fits.clone());
    }
    let smallest = candidates.iter().min_by_key(|c| c.total()).expect("at least one candidate");
    let mut problem = format!(
        "--mem-budget {budget} is too small: the smallest that works is {} ({smallest})",
        mib(smallest.total())
    );
    if !can_page {
        problem.push_str("; random weights are not paged (give a checkpoint directory)");
    }
    Err(Error::Training { problem })
}

/// The estimate of one option (`shape.batch` is the micro-batch).
pub fn estimate(
    model: &Model,
    lora: Option<&LoraLayout>,
    frozen: DType,
    shape: StepShape,
    checkpointed_blocks: usize,
    paging: Paging,
) -> BudgetPlan {
    let layout = model.layout();
    let config = model.config();
    let element = if lora.is_some() { frozen.size_bytes() } else { 4 } as u64;
    let vectors = layout.vector_len() as u64 * 4;
    let (b, t, threads) = (shape.batch, shape.seq, shape.threads);
    let resident: u64 = layout
        .params()
        .filter(|&p| !paging.covers(p))
        .filter_map(|p| layout.slot(p).filter(|s| s.matrix))
        .map(|s| s.len as u64 * element)
        .sum();
    let slot = match paging {
        Paging::Off => 0,
        Paging::Blocks => block_bytes(layout, element),
        Paging::BlocksAndEmbeddings => {
            let chunk = LmHeadLoss::new(b * t, config.hidden, config.vocab).chunk();
            let head_chunk = (chunk * config.hidden) as u64 * element;
            block_bytes(layout, element).max(head_chunk)
        }
    };
    let weights = resident + vectors + 2 * slot;
    let trained = lora.map_or(layout.numel(), LoraLayout::len) as u64 * 4;
    // Training keeps the trained tensors, their gradients and two AdamW moments. Full
    // fine-tuning with paged blocks keeps the gradients of what is resident, the vectors'
    // moments, one block's gradient and the optimizer pass's chunks
    // (`crate::paging::full`); the rest is in the scratch file.
    let trained = match (shape.training, lora, paging) {
        (true, None, Paging::Blocks | Paging::BlocksAndEmbeddings) => {
            let block = block_bytes(layout, 4);
            let chunk = crate::paging::full::UPDATE_CHUNK.min(layout.matrix_len()) as u64;
            let chunks = 4 * chunk * 4;
            resident + vectors * 3 + block + chunks
        }
        (true, _, _) => 4 * trained,
        (false, _, _) => lora.map_or(0, |_| trained),
    };
    let kernels = Kernels::best();
    let train = Purpose::Train { checkpointed_blocks };
    let eval = model.workspace_len(&kernels, lora, b, t, Purpose::Logits, threads);
    let workspace = if shape.training {
        model.workspace_len(&kernels, lora, b, t, train, threads).max(eval)
    } else {
        eval
    };
    let workspace = workspace as u64 * 4;
    let weights_part = match paging {
        Paging::Off => "weights",
        Paging::Blocks | Paging::BlocksAndEmbeddings => "weights (resident part and 2 slots)",
    };
    let trained_part = match (shape.training, lora, paging) {
        (true, None, Paging::Off) => "trained tensors, gradients, AdamW moments",
        (true, None, _) => "gradients and moments in memory (the rest in the scratch file)",
        (true, Some(_), _) => "trained tensors, gradients, AdamW moments",
        (false, _, _) => "adapters",
    };
    let parts = vec![
        (weights_part, weights),
        (trained_part, trained),
        ("activations and scratch", workspace),
        ("process", PROCESS_ALLOWANCE + 3 * shape.tokenizer_bytes),
    ];
    BudgetPlan { paging, checkpointed_blocks, micro_batch: b, parts }
}

/// Bytes of one block's matrices in a paging slot (each matrix at a 64-byte boundary).
fn block_bytes(layout: &ParamLayout, element: u64) -> u64 {
    mft_models::LayerParam::ALL
        .iter()
        .filter_map(|&p| layout.slot(Param::Layer(0, p)).filter(|s| s.matrix))
        .map(|s| (s.len as u64 * element).next_multiple_of(64))
        .sum()
}

#[cfg(test)]
mod tests {
    use mft_models::{LoraConfig, LoraTargets, ModelConfig};

    use super::*;

    #[test]
    fn sizes_parse_in_binary_and_decimal_units() {
        let parse = |s: &str| s.parse::<MemBudget>().map(|b| b.0);
        assert_eq!(parse("200MiB"), Ok(200 << 20));
        assert_eq!(parse("1GiB"), Ok(1 << 30));
        assert_eq!(parse("1.5 GB"), Ok(1_500_000_000));
        assert_eq!(parse("4096"), Ok(4096));
        assert_eq!(parse("512mb"), Ok(512_000_000));
        assert!(parse("12 parsecs").unwrap_err().contains("unknown unit"));
        assert!(parse("MiB").is_err());
        assert!(parse("0MiB").is_err());
    }

    fn gpt2_lora() -> (Model, LoraLayout) {
        let config = ModelConfig::gpt2();
        let targets = LoraTargets::from_module_names(config.family, ["c_attn", "c_proj"]).unwrap();
        let lora = LoraConfig { rank: 8, alpha: 16.0, dropout: 0.05, rslora: false, targets };
        (Model::new(config).unwrap(), LoraLayout::new(&config, &lora))
    }

    const SHAPE: StepShape =
        StepShape { batch: 4, seq: 128, threads: 2, tokenizer_bytes: 0, training: true };

    /// A generous budget keeps everything resident; tighter ones checkpoint, then page; the
    /// plan chosen always fits, and too small a budget names the smallest that works.
    #[test]
    fn plans_get_leaner_as_the_budget_shrinks() {
        let (model, lora) = gpt2_lora();
        let bf16 = DType::BF16;
        let plan_for = |budget| plan(&model, Some(&lora), bf16, SHAPE, 0, true, MemBudget(budget));
        let summary = |p: &BudgetPlan| (p.paging, p.micro_batch, p.checkpointed_blocks);
        let roomy = plan_for(4 << 30).unwrap();
        assert_eq!(summary(&roomy), (Paging::Off, 4, 0));
        let resident = estimate(&model, Some(&lora), bf16, SHAPE, 0, Paging::Off).total();
        let blocks = plan_for(resident - 1).unwrap();
        assert_eq!(summary(&blocks), (Paging::Blocks, 4, 0), "{blocks}");
        let embeddings = plan_for(320 << 20).unwrap();
        assert_eq!(summary(&embeddings), (Paging::BlocksAndEmbeddings, 4, 0), "{embeddings}");
        // 200 MiB splits the batch in two rather than recompute blocks.
        let lean = plan_for(200 << 20).unwrap();
        assert_eq!(summary(&lean), (Paging::BlocksAndEmbeddings, 2, 0), "{lean}");
        // Checkpointing comes last.
        let micro = StepShape { batch: 1, ..SHAPE };
        let unsplit = estimate(&model, Some(&lora), bf16, micro, 0, Paging::BlocksAndEmbeddings);
        let leanest = plan_for(unsplit.total() - 1).unwrap();
        assert!(leanest.checkpointed_blocks > 0, "{leanest}");
        for plan in [roomy, blocks, embeddings, lean, leanest] {
            assert_eq!(
                plan,
                estimate(
                    &model,
                    Some(&lora),
                    bf16,
                    StepShape { batch: plan.micro_batch, ..SHAPE },
                    plan.checkpointed_blocks,
                    plan.paging
                )
            );
        }
        // Without files to page from, 256 MiB is refused.
        let err =
            plan(&model, Some(&lora), bf16, SHAPE, 0, false, MemBudget(256 << 20)).unwrap_err();
        assert!(err.to_string().contains("random weights are not paged"), "{err}");

        let err = plan(&model, Some(&lora), bf16, SHAPE, 0, true, MemBudget(50 << 20)).unwrap_err();
        let micro = StepShape { batch: 1, ..SHAPE };
        let smallest =
            estimate(&model, Some(&lora), bf16, micro, 12, Paging::BlocksAndEmbeddings).total();
        let message = err.to_string();
        assert!(
            message.contains(&format!("the smallest that works is {}", mib(smallest))),
            "{message}"
        );
    }
}
