#!/usr/bin/env python3
"""Time one PyTorch fine-tuning step, as a baseline for mft's own benchmarks.

The model is built from a config written in this file at the real model's
shapes, with random weights (nothing is downloaded).  One step is

    forward(input_ids, labels=input_ids) -> loss.backward() -> AdamW.step()
    -> zero_grad()

on a fixed batch of random token ids, on the CPU, in float32, with PyTorch's
own scaled-dot-product attention (``--attn eager`` for the eager one).
``--mode lora`` wraps the model with PEFT LoRA (r=8, alpha=16, dropout 0.05)
and trains only the adapters; ``--mode full`` trains every parameter.  The
model is in training mode with the LoRA dropout active; the base model's own
dropout (GPT-2's resid/embd/attn 0.1) is switched off, because mft's step has
none, so both time the same computation (``--model-dropout`` keeps it).

The script reports the median and minimum step time over ``--steps`` timed
steps (after ``--warmup`` untimed ones), tokens/s (batch*seq / median) and the
process's peak resident set size.  Progress goes to stderr; ``--json`` prints a
single JSON object on stdout.

Example:

    /work/torch-venv/bin/python scripts/torch_step.py --model gpt2 --mode lora \\
        --batch 4 --seq 128 --threads 2 --steps 8 --json

Not run by CI.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
import warnings

import torch
import transformers
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    Qwen2Config,
    Qwen2ForCausalLM,
)


def _gemma3_layer_types(n_layers: int) -> list[str]:
    # Gemma 3: five sliding-window layers, then one global layer, repeating.
    return ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(n_layers)]


def _gemma3(hidden: int, intermediate: int, layers: int) -> Gemma3TextConfig:
    return Gemma3TextConfig(
        vocab_size=262144,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=256,
        query_pre_attn_scalar=256,
        sliding_window=512,
        layer_types=_gemma3_layer_types(layers),
        rope_theta=1_000_000.0,
        rope_local_base_freq=10_000.0,
        rms_norm_eps=1e-6,
        max_position_embeddings=32768,
        tie_word_embeddings=True,
        hidden_activation="gelu_pytorch_tanh",
    )


MODELS = {
    "gpt2": (GPT2LMHeadModel, lambda: GPT2Config()),
    "gpt2-medium": (GPT2LMHeadModel, lambda: GPT2Config(n_embd=1024, n_layer=24, n_head=16)),
    "qwen2.5-0.5b": (
        Qwen2ForCausalLM,
        lambda: Qwen2Config(
            vocab_size=151936,
            hidden_size=896,
            intermediate_size=4864,
            num_hidden_layers=24,
            num_attention_heads=14,
            num_key_value_heads=2,
            rope_theta=1_000_000.0,
            rms_norm_eps=1e-6,
            max_position_embeddings=32768,
            tie_word_embeddings=True,
        ),
    ),
    "gemma3-270m": (Gemma3ForCausalLM, lambda: _gemma3(640, 2048, 18)),
    "gemma3-1b": (Gemma3ForCausalLM, lambda: _gemma3(1152, 6912, 26)),
}

DEFAULT_TARGETS = {
    "gpt2": ["c_attn", "c_proj"],
    "gpt2-medium": ["c_attn", "c_proj"],
}
OTHER_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def peak_rss_bytes() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ru_maxrss is in KiB on Linux, bytes on macOS.
    return rss if sys.platform == "darwin" else rss * 1024


def build(
    model_name: str, mode: str, targets: list[str], attn: str, model_dropout: bool
) -> torch.nn.Module:
    cls, make_config = MODELS[model_name]
    config = make_config()
    if not model_dropout:
        for field in ("resid_pdrop", "embd_pdrop", "attn_pdrop", "attention_dropout"):
            if hasattr(config, field):
                setattr(config, field, 0.0)
    config._attn_implementation = attn
    model = cls(config).to(torch.float32)
    model.config._attn_implementation = attn
    model.config.use_cache = False
    if mode == "lora":
        from peft import LoraConfig, get_peft_model

        lcfg = LoraConfig(
            task_type="CAUSAL_LM",
            r=8,
            lora_alpha=16,
            lora_dropout=0.05,
            target_modules=targets,
            bias="none",
            # GPT-2's projections are transformers' Conv1D ([in, out] weights).
            fan_in_fan_out=model_name.startswith("gpt2"),
        )
        model = get_peft_model(model, lcfg)
    else:
        for p in model.parameters():
            p.requires_grad_(True)
    model.train()
    return model


def main() -> int:
    ap = argparse.ArgumentParser(description="Time a PyTorch fine-tuning step (CPU, float32).")
    ap.add_argument("--model", required=True, choices=sorted(MODELS))
    ap.add_argument("--mode", required=True, choices=["lora", "full"])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=8, help="timed steps")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps before timing")
    ap.add_argument(
        "--targets",
        default=None,
        help="comma-separated LoRA target modules (default: c_attn,c_proj for GPT-2, "
        "q_proj,k_proj,v_proj,o_proj otherwise)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--attn", choices=["sdpa", "eager"], default="sdpa", help="attention implementation")
    ap.add_argument(
        "--model-dropout", action="store_true", help="keep the base model's own dropout (GPT-2: 0.1)"
    )
    ap.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    args = ap.parse_args()
    if args.steps < 1:
        ap.error("--steps must be >= 1")

    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(args.threads)
    except RuntimeError:
        pass
    torch.manual_seed(args.seed)
    transformers.logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=FutureWarning)

    targets = args.targets.split(",") if args.targets else DEFAULT_TARGETS.get(args.model, OTHER_TARGETS)

    t0 = time.perf_counter()
    model = build(args.model, args.mode, targets, args.attn, args.model_dropout)
    assert model.config._attn_implementation == args.attn
    params = [p for p in model.parameters() if p.requires_grad]
    n_train = sum(p.numel() for p in params)
    n_total = sum(p.numel() for p in model.parameters())
    log(
        f"built {args.model} ({args.mode}) in {time.perf_counter() - t0:.1f}s: "
        f"{n_total / 1e6:.1f}M parameters, {n_train / 1e6:.3f}M trainable"
        + (f", LoRA targets {targets}" if args.mode == "lora" else "")
    )
    opt = torch.optim.AdamW(params, lr=1e-4)

    vocab = model.config.vocab_size
    gen = torch.Generator().manual_seed(args.seed)
    input_ids = torch.randint(0, vocab, (args.batch, args.seq), generator=gen)
    labels = input_ids.clone()

    def step() -> float:
        start = time.perf_counter()
        out = model(input_ids=input_ids, labels=labels, use_cache=False)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        elapsed = time.perf_counter() - start
        step.last_loss = out.loss.item()
        return elapsed

    for i in range(args.warmup):
        dt = step()
        log(f"warmup {i + 1}/{args.warmup}: {dt:.3f}s loss {step.last_loss:.4f}")
    times = []
    for i in range(args.steps):
        dt = step()
        times.append(dt)
        log(f"step {i + 1}/{args.steps}: {dt:.3f}s loss {step.last_loss:.4f}")

    median = statistics.median(times)
    result = {
        "model": args.model,
        "mode": args.mode,
        "batch": args.batch,
        "seq": args.seq,
        "threads": args.threads,
        "steps": args.steps,
        "torch_version": torch.__version__,
        "implementation": "pytorch",
        "attn": args.attn,
        "model_dropout": args.model_dropout,
        "median_step_s": median,
        "min_step_s": min(times),
        "tokens_per_s": args.batch * args.seq / median,
        "peak_rss_bytes": peak_rss_bytes(),
        "step_s": times,
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"model         {args.model} ({args.mode})")
        print(f"batch x seq   {args.batch} x {args.seq}, {args.threads} threads, torch {torch.__version__}")
        print(f"median step   {median:.3f} s")
        print(f"min step      {min(times):.3f} s")
        print(f"tokens/s      {result['tokens_per_s']:.1f}")
        print(f"peak RSS      {result['peak_rss_bytes'] / 2**20:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
