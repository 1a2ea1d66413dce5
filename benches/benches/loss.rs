//! The fused LM head + cross-entropy at GPT-2 (512 tokens × 768 × 50257) and Gemma 3
//! (512 × 640 × 262144) vocabulary sizes, on 1 and 2 threads, side by side with our GEMM on the
//! LM head's own product (`logits = X·Wᵀ`, 512 × vocab × hidden) measured in the same run:
//! `cargo bench -p mft-benches --bench loss [-- --reps N --threads 1,2 --shapes gpt2,gemma
//! --chunk N --quick]`.
//!
//! Rows (each timed `reps` times, interleaved in rotation after a warm-up; median and min–max):
//! - `gemm X·Wᵀ`: the reference rate, `2·tokens·hidden·vocab` FLOPs;
//! - `forward`: [`Kernels::lm_head_loss_forward`], one useful GEMM's FLOPs;
//! - `fwd+bwd full, chunks`: [`Kernels::lm_head_loss_forward_backward`] with `d_weight` (full
//!   fine-tuning) on the shape of [`LmHeadLoss::new`] (vocabulary chunks, `--chunk` sets them),
//!   counted as the 3 useful GEMMs (logits, `d_hidden`, `d_weight`) although it executes 4 (the
//!   backward recomputes the logits);
//! - `fwd+bwd full, token blocks`: the same call on [`LmHeadLoss::with_token_blocks`]'s shape
//!   (what a trained head runs; absent where the vocabulary is too large for it), which
//!   executes the 3 useful GEMMs;
//! - `fwd+bwd LoRA` and `fwd+bwd LoRA bf16`: without `d_weight` (frozen head, f32 or bf16),
//!   counted as the 2 useful GEMMs, which is also what runs.
//!
//! The ratio column is each row's useful GFLOP/s over the GEMM row's median GFLOP/s.

#[path = "common/mod.rs"]
mod common;

use std::hint::black_box;
use std::time::Instant;

use mft_kernels::loss::{IGNORE_INDEX, LmHeadLoss};
use mft_kernels::{Kernels, Mat, MatMut, Parallel, Sequential, bf16};
use mft_std::ThreadPool;

use common::Stats;

const USAGE: &str = "\
usage: loss [--reps N] [--threads 1,2] [--shapes gpt2,gemma] [--chunk N] [--quick]
  --reps N        timed repetitions of each row (default 5)
  --threads LIST  thread counts (default 1,2)
  --shapes LIST   gpt2 (512×768×50257) and/or gemma (512×640×262144) (default both)
  --chunk N       vocabulary chunk of the fused loss (default: LmHeadLoss::new's)
  --quick         2 repetitions, GPT-2 only";

/// A vocabulary-sized shape.
#[derive(Debug, Clone, Copy)]
struct Shape {
    name: &'static str,
    tokens: usize,
    hidden: usize,
    vocab: usize,
}

const SHAPES: [Shape; 2] = [
    Shape { name: "gpt2", tokens: 512, hidden: 768, vocab: 50257 },
    Shape { name: "gemma", tokens: 512, hidden: 640, vocab: 262144 },
];

impl Shape {
    /// FLOPs of one `tokens × vocab × hidden` product.
    fn gemm_flops(&self) -> f64 {
        2.0 * self.tokens as f64 * self.hidden as f64 * self.vocab as f64
    }
}

#[derive(Debug)]
struct Options {
    reps: usize,
    threads: Vec<usize>,
    shapes: Vec<Shape>,
    chunk: Option<usize>,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options { reps: 5, threads: vec![1, 2], shapes: SHAPES.to_vec(), chunk: None };
    let mut i = 0;
    let value = |i: usize| args.get(i + 1).ok_or_else(|| format!("{} needs a value", args[i]));
    while i < args.len() {
        match args[i].as_str() {
            "--bench" => {}
            "--quick" => {
                o.reps = 2;
                o.shapes = vec![SHAPES[0]];
            }
            "--reps" => {
                o.reps = value(i)?.parse().map_err(|e| format!("--reps: {e}"))?;
                i += 1;
            }
            "--chunk" => {
                o.chunk = Some(value(i)?.parse().map_err(|e| format!("--chunk: {e}"))?);
                i += 1;
            }
            "--threads" => {
                o.threads = value(i)?
                    .split(',')
                    .map(|t| t.trim().parse::<usize>().map_err(|e| format!("--threads: {e}")))
                    .collect::<Result<_, _>>()?;
                i += 1;
            }
            "--shapes" => {
                o.shapes = value(i)?
                    .split(',')
                    .map(|s| {
                        SHAPES
                            .iter()
                            .find(|shape| shape.name == s.trim())
                            .copied()
                            .ok_or_else(|| format!("unknown shape {s}"))
                    })
                    .collect::<Result<_, _>>()?;
                i += 1;
            }
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
        i += 1;
    }
    if o.reps == 0 || o.threads.contains(&0) {
        return Err(format!("reps and thread counts must be positive\n{USAGE}"));
    }
    Ok(o)
}

/// `len` values in [-scale, scale) (the shared xorshift generator, scaled).
fn random_values(len: usize, seed: u64, scale: f32) -> Vec<f32> {
    common::random_values(len, seed).into_iter().map(|v| v * scale).collect()
}

/// The operands and outputs of one shape.
struct Buffers {
    hidden: Vec<f32>,
    weight: Vec<f32>,
    weight_bf16: Vec<bf16>,
    labels: Vec<i32>,
    lse: Vec<f32>,
    d_hidden: Vec<f32>,
    d_weight: Vec<f32>,
    /// The GEMM row's output, `tokens × vocab`.
    logits: Vec<f32>,
    scratch: Vec<f32>,
}

/// A row of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Row {
    Gemm,
    Forward,
    Full,
    FullBlocks,
    Lora,
    LoraBf16,
}

impl Row {
    fn name(self) -> &'static str {
        match self {
            Row::Gemm => "gemm X·Wᵀ",
            Row::Forward => "forward",
            Row::Full => "fwd+bwd full, chunks",
            Row::FullBlocks => "fwd+bwd full, token blocks",
            Row::Lora => "fwd+bwd LoRA (frozen f32)",
            Row::LoraBf16 => "fwd+bwd LoRA (frozen bf16)",
        }
    }

    /// Useful GEMMs counted (each `2·tokens·hidden·vocab` FLOPs).
    fn useful_gemms(self) -> f64 {
        match self {
            Row::Gemm | Row::Forward => 1.0,
            Row::Lora | Row::LoraBf16 => 2.0,
            Row::Full | Row::FullBlocks => 3.0,
        }
    }

    /// GEMMs executed.
    fn executed_gemms(self) -> f64 {
        match self {
            Row::Full => 4.0,
            other => other.useful_gemms(),
        }
    }
}

fn run_row(
    row: Row,
    k: &Kernels,
    shape: &Shape,
    loss: &LmHeadLoss,
    b: &mut Buffers,
    parallel: &dyn Parallel,
) {
    let (t, h, v) = (shape.tokens, shape.hidden, shape.vocab);
    match row {
        Row::Gemm => k.gemm().run(
            1.0,
            Mat::row_major(&b.hidden, t, h, h),
            Mat::row_major(&b.weight, v, h, h).t(),
            0.0,
            MatMut::row_major(&mut b.logits, t, v, v),
            &mut b.scratch,
            parallel,
        ),
        Row::Forward => {
            black_box(k.lm_head_loss_forward(
                loss,
                &b.hidden,
                &b.weight,
                &b.labels,
                &mut b.lse,
                &mut b.scratch,
                parallel,
            ));
        }
        Row::Full | Row::FullBlocks => {
            // The same call; the shape says whether token blocks are planned.
            let shape = if row == Row::FullBlocks { loss.with_token_blocks() } else { *loss };
            black_box(k.lm_head_loss_forward_backward(
                &shape,
                &b.hidden,
                &b.weight,
                &b.labels,
                1.0,
                &mut b.d_hidden,
                Some(&mut b.d_weight),
                &mut b.scratch,
                parallel,
            ));
        }
        Row::Lora => {
            black_box(k.lm_head_loss_forward_backward(
                loss,
                &b.hidden,
                &b.weight,
                &b.labels,
                1.0,
                &mut b.d_hidden,
                None,
                &mut b.scratch,
                parallel,
            ));
        }
        Row::LoraBf16 => {
            black_box(k.lm_head_loss_forward_backward(
                loss,
                &b.hidden,
                &b.weight_bf16,
                &b.labels,
                1.0,
                &mut b.d_hidden,
                None,
                &mut b.scratch,
                parallel,
            ));
        }
    }
}

fn measure(shape: &Shape, threads: usize, options: &Options) {
    let (t, h, v) = (shape.tokens, shape.hidden, shape.vocab);
    let k = Kernels::best();
    let pool = (threads > 1).then(|| ThreadPool::new(threads).expect("thread pool"));
    let parallel: &dyn Parallel = match &pool {
        Some(pool) => pool,
        None => &Sequential,
    };
    let mut loss = LmHeadLoss::new(t, h, v);
    if let Some(chunk) = options.chunk {
        loss = loss.with_chunk(chunk);
    }
    let loss_scratch = loss.scratch_len(&k, threads);
    let blocks_scratch = loss.with_token_blocks().scratch_len(&k, threads);
    let gemm_scratch = k.gemm().scratch_len(t, v, h, threads);
    // Hidden states and weights of the scale of a trained model's (logits of a few units).
    let weight = random_values(v * h, 0xd1b5_4a32_d192_ed03, 0.1);
    let mut b = Buffers {
        hidden: random_values(t * h, 0x9e37_79b9_7f4a_7c15, 1.0),
        weight_bf16: weight.iter().map(|&w| bf16::from_f32(w)).collect(),
        weight,
        labels: (0..t)
            .map(|i| if i % 17 == 16 { IGNORE_INDEX } else { ((i * 7919) % v) as i32 })
            .collect(),
        lse: vec![0.0; t],
        d_hidden: vec![0.0; t * h],
        d_weight: vec![0.0; v * h],
        logits: vec![0.0; t * v],
        scratch: vec![0.0; loss_scratch.max(blocks_scratch).max(gemm_scratch)],
    };
    let mut rows = vec![Row::Gemm, Row::Forward, Row::Full];
    if loss.with_token_blocks().token_block() > 0 {
        rows.push(Row::FullBlocks);
    }
    rows.extend([Row::Lora, Row::LoraBf16]);
    eprintln!(
        "{} ({t} tokens × {h} hidden × {v} vocab), {threads} thread(s), {} ISA, chunk {}, \
         scratch {:.2} MB ({} floats: logits block {:.2} MB); token blocks of {}: scratch {:.2} MB",
        shape.name,
        k.isa(),
        loss.chunk(),
        loss_scratch as f64 * 4.0 / 1e6,
        loss_scratch,
        (t * loss.chunk()) as f64 * 4.0 / 1e6,
        loss.with_token_blocks().token_block(),
        blocks_scratch as f64 * 4.0 / 1e6,
    );
    // Warm-up: one call of each (pages the buffers in).
    for &row in &rows {
        run_row(row, &k, shape, &loss, &mut b, parallel);
    }
    let mut samples = vec![Vec::new(); rows.len()];
    for rep in 0..options.reps {
        for i in 0..rows.len() {
            let i = (i + rep) % rows.len();
            let start = Instant::now();
            run_row(rows[i], &k, shape, &loss, &mut b, parallel);
            samples[i].push(start.elapsed().as_secs_f64());
        }
    }
    let flops = shape.gemm_flops();
    let gemm_rate = flops / Stats::of(&samples[0]).median / 1e9;
    println!(
        "{:<8} {:>2}t  {:<31} {:>9} {:>17}  {:>8} {:>8}  {:>6}",
        "shape", "", "row", "median ms", "min–max ms", "useful", "executed", "ratio"
    );
    for (row, samples) in rows.iter().zip(&samples) {
        let Stats { median, min, max } = Stats::of(samples);
        let useful = row.useful_gemms() * flops / median / 1e9;
        let executed = row.executed_gemms() * flops / median / 1e9;
        println!(
            "{:<8} {threads:>2}t  {:<31} {:>9.1} {:>8.1}–{:<8.1}  {:>8.1} {:>8.1}  {:>6.2}",
            shape.name,
            row.name(),
            median * 1e3,
            min * 1e3,
            max * 1e3,
            useful,
            executed,
            useful / gemm_rate
        );
    }
    println!(
        "  (GFLOP/s; useful counts 2·tokens·hidden·vocab per useful GEMM; ratio = useful / gemm)"
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = match parse(&args) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    for shape in &options.shapes {
        for &threads in &options.threads {
            measure(shape, threads, &options);
        }
    }
}
