#!/usr/bin/env bash
# Paged frozen weights (issue #7) on GPT-2 small shapes: LoRA r=8 on c_attn and c_proj, bf16
# frozen weights converted from an f32 snapshot, batch 4 x 128, 2 threads, 8 steps per run.
# Three configurations per round, interleaved: everything resident; the same checkpointing the
# budget plan picks but resident; and --mem-budget (paged). Prints each run's s/step and peak
# RSS (GNU time's maximum resident set size, i.e. VmHWM). No Python packages needed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
BUDGET=${BUDGET:-256MiB}
CKPT=${CKPT:-10}   # what --mem-budget 256MiB picks for this model and batch
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cargo build --release --bin mft -q
mft=target/release/mft
python3 - "$work" <<'PY'
import random, sys
random.seed(1)
with open(sys.argv[1] + "/ids.jsonl", "w") as f:
    for _ in range(64):
        f.write('{"ids": [%s]}\n' % ",".join(str(random.randrange(50000)) for _ in range(128)))
PY
# A GPT-2-small snapshot at real shapes: random weights, one full fine-tuning step, exported.
$mft finetune --model random:gpt2 --data "$work/ids.jsonl" --full --steps 1 --seq 64 --batch 1 \
    --eval-fraction 0 --out "$work/gpt2" --quiet > /dev/null
run() {
    local label=$1; shift
    rm -rf "$work/out"
    local line
    line=$( { /usr/bin/time -f "PEAK %M" $mft finetune --model "$work/gpt2" --data "$work/ids.jsonl" \
        --frozen bf16 --batch 4 --seq 128 --steps 8 --lora-targets c_attn,c_proj --lora-r 8 \
        --threads 2 --eval-fraction 0 --out "$work/out" "$@" 2>&1 >/dev/null; } \
        | grep -E "steps in|PEAK" | tr '\n' ' ')
    local per_step peak
    per_step=$(sed -E 's/.*\(([0-9.]+) s\/step\).*/\1/' <<< "$line")
    peak=$(sed -E 's/.*PEAK ([0-9]+).*/\1/' <<< "$line")
    printf '%-34s %s s/step  peak RSS %d MiB\n' "$label" "$per_step" $((peak / 1024))
}
for round in $(seq "$ROUNDS"); do
    echo "round $round"
    run "resident"
    run "resident, $CKPT blocks checkpointed" --checkpoint-blocks "$CKPT"
    run "--mem-budget $BUDGET (paged)" --mem-budget "$BUDGET"
done
