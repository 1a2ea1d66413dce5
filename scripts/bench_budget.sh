#!/usr/bin/env bash
# The "Training inside a memory budget" tables of BENCHMARKS.md (issues #7 and #5).
#
# GPT-2 small LoRA (r 8 on c_attn and c_proj), batch 4 × 128, 2 threads: ROUNDS rounds (default
# 3), each running PyTorch's LoRA step (when $PYTHON has scripts/requirements.txt), then mft's
# step with bf16 frozen weights all resident, and with `--mem-budget` 200MiB (bf16), 450MB (bf16)
# and 700MB (f32); STEPS timed steps after WARMUP warm-up ones. Then Qwen2.5-0.5B (512MiB) and
# Gemma-3-1B (1GiB) LoRA, batch 1 × 256, once each. Every run is
# `cargo xtask bench train … --json` (the bench binary, run directly); the first budgeted run
# of a model writes its random checkpoint under target/tmp/bench-weights. Prints one JSON line
# per run, then a summary: median step time (range over rounds), the ratio to the resident run
# and to PyTorch within each round (median and range), and the peak RSS (VmHWM).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
STEPS=${STEPS:-6}
WARMUP=${WARMUP:-2}
PYTHON=${PYTHON:-}
cargo build --release -p mft-benches --bench train >&2
bench=$(ls -t target/release/deps/train-* | grep -v '\.d$' | head -1)
out=$(mktemp)
trap 'rm -f "$out"' EXIT
gpt2() { "$bench" --model gpt2 --mode lora --steps "$STEPS" --warmup "$WARMUP" --json "$@" 2>/dev/null; }
for round in $(seq "$ROUNDS"); do
  if [ -n "$PYTHON" ]; then
    "$PYTHON" scripts/torch_step.py --model gpt2 --mode lora --steps "$STEPS" --warmup "$WARMUP" \
      --json 2>/dev/null | sed "s/^{/{\"round\": $round, \"run\": \"pytorch\", /"
  fi
  gpt2 --frozen bf16 | sed "s/^{/{\"round\": $round, \"run\": \"resident bf16\", /"
  gpt2 --frozen bf16 --mem-budget 200MiB | sed "s/^{/{\"round\": $round, \"run\": \"200MiB bf16\", /"
  gpt2 --frozen bf16 --mem-budget 450MB | sed "s/^{/{\"round\": $round, \"run\": \"450MB bf16\", /"
  gpt2 --frozen f32 --mem-budget 700MB | sed "s/^{/{\"round\": $round, \"run\": \"700MB f32\", /"
done | tee "$out"
for spec in "qwen2.5-0.5b 512MiB" "gemma3-1b 1GiB"; do
  set -- $spec
  "$bench" --model "$1" --mode lora --frozen bf16 --batch 1 --seq 256 --steps 3 --warmup 1 \
    --mem-budget "$2" --json 2>/dev/null | sed "s/^{/{\"round\": 1, \"run\": \"$1 $2\", /"
done | tee -a "$out"
python3 - "$out" <<'EOF'
import json, statistics, sys
runs = [json.loads(line) for line in open(sys.argv[1]) if line.startswith("{")]
by = {}
for r in runs:
    by.setdefault(r["run"], []).append(r)
def in_round(run, other):
    # Ratios within a round, between runs of the same model only.
    base = {(r["round"], r["model"]): r["median_step_s"] for r in by.get(other, [])}
    return [r["median_step_s"] / base[(r["round"], r["model"])] for r in by[run]
            if (r["round"], r["model"]) in base]
def fmt(xs):
    return f"{statistics.median(xs):.2f} ({min(xs):.2f}–{max(xs):.2f})" if xs else "—"
for name, rs in by.items():
    t = [r["median_step_s"] for r in rs]
    rss = max(r.get("peak_rss_bytes", 0) for r in rs) / 2**20
    plan = rs[0].get("paging")
    extra = f"  plan: {plan}, micro-batch {rs[0].get('micro_batch')}, {rs[0].get('checkpointed_blocks')} blocks checkpointed" if plan else ""
    print(f"{name:22} step {statistics.median(t):.3f} s ({min(t):.3f}–{max(t):.3f})"
          f"  vs resident {fmt(in_round(name, 'resident bf16'))}"
          f"  vs PyTorch {fmt(in_round(name, 'pytorch'))}  peak RSS {rss:.0f} MiB{extra}")
EOF
