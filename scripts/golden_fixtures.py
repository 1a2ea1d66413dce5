#!/usr/bin/env python3
"""Generate the golden reference fixtures used by the mft-models tests.

What it does
------------
For each case below the script builds a *tiny* randomly initialised Hugging Face
model (GPT-2, Qwen2, Gemma3) from a config written in this file (nothing is
downloaded), perturbs every parameter so that no tensor sits at its default
value (zero biases, unit norm weights, zero LoRA B, ...), and writes into
``mft-models/tests/fixtures/<case>/``:

* ``config.json`` + ``model.safetensors``  -- the base model, float32, written
  by ``PreTrainedModel.save_pretrained``.
* ``adapter_config.json`` + ``adapter_model.safetensors`` -- LoRA cases only,
  written by PEFT's ``save_pretrained``.
* ``golden.safetensors`` -- the reference forward/backward result:

  ========================  ========  ==========================================
  tensor                    dtype     meaning
  ========================  ========  ==========================================
  ``input_ids``             int64     [2, 12] token ids
  ``labels``                int64     [2, 12] labels exactly as passed to HF
                                      (*unshifted*; HF shifts internally, so
                                      ``logits[:, t]`` is scored against
                                      ``labels[:, t + 1]``; -100 = ignored)
  ``logits``                float32   [2, 12, vocab]
  ``loss``                  float32   [1] mean cross entropy over the
                                      non-ignored shifted targets
  ``grad.<name>``           float32   d loss / d parameter.  Full fine-tuning
                                      cases: one entry per trainable parameter,
                                      ``<name>`` is the key in
                                      ``model.safetensors`` (tied weights appear
                                      once, under the embedding's name).  LoRA
                                      cases: one entry per LoRA tensor,
                                      ``<name>`` is the key in
                                      ``adapter_model.safetensors``.
  ========================  ========  ==========================================

  The safetensors metadata records the library versions, the case, and for LoRA
  cases r / alpha / use_rslora / target modules / the resulting scaling.

How the reference is computed
-----------------------------
The weights are stored in float32, so they are exactly representable in
float64.  The model (PEFT-wrapped for LoRA cases) is converted with
``.double()`` and the forward pass with ``labels=`` plus ``loss.backward()`` is
run in float64.  Hugging Face hard-codes a few float32 up-casts that would
otherwise silently drop parts of that computation back to float32 (the loss
calls ``logits.float()``, eager attention uses ``softmax(..., dtype=float32)``,
RMSNorm and RoPE call ``.float()`` / ``.to(torch.float32)``).  While the
reference runs, :class:`Float32MeansFloat64` rewrites every request for float32
into float64 and fails loudly if any float32 tensor is still produced, so the
stored numbers are a genuine float64 evaluation of the model, rounded to
float32 only when written.  (Constants that HF computes in float32 at
construction time -- RoPE inverse frequencies and Gemma's embedding scale
sqrt(hidden) -- keep their float32-rounded values, as in any float32 run.)

Dropout is disabled, no attention mask is passed (there is no padding) and the
eager attention implementation is used.

CI does NOT run this script
---------------------------
The fixtures are committed; CI (``cargo test``) only reads them.  Regenerate
them by hand when a case changes:

    /work/torch-venv/bin/python scripts/golden_fixtures.py

(from the repository root; ``scripts/requirements.txt`` pins the versions the
committed fixtures were made with).  The script is deterministic and overwrites
the case directories.  ``--out DIR`` writes somewhere else, ``--case NAME``
(repeatable) limits the run to some cases.
"""

from __future__ import annotations

import argparse
import json
import shutil
import struct
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import peft
import safetensors
import torch
import transformers
from peft import LoraConfig, get_peft_model
from safetensors import safe_open
from safetensors.torch import save_file
from torch.overrides import TorchFunctionMode
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    Qwen2Config,
    Qwen2ForCausalLM,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "mft-models" / "tests" / "fixtures"

VOCAB = 96
BATCH = 2
SEQ = 12
# Every parameter gets N(0, PERTURB_STD^2) noise added; LoRA tensors are drawn
# from N(0, LORA_STD^2).
PERTURB_STD = 0.1
LORA_STD = 0.1
# Label positions replaced by -100, per row.  Position 0 is never a target
# after HF's shift, so row 1 also checks that an implementation does not
# trip over it; the interior positions are the ones that matter.
IGNORED_LABEL_POSITIONS = {0: (4, 9), 1: (0, 6, 11)}
MAX_CASE_BYTES = 1_000_000

FILES_KEPT = {
    "config.json",
    "model.safetensors",
    "adapter_config.json",
    "adapter_model.safetensors",
    "golden.safetensors",
}


# --------------------------------------------------------------------------
# model configs


def gpt2_config() -> GPT2Config:
    return GPT2Config(
        vocab_size=VOCAB,
        n_positions=32,
        n_embd=32,
        n_layer=2,
        n_head=4,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=0,
    )


def qwen2_config(tied: bool) -> Qwen2Config:
    return Qwen2Config(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        rope_theta=10000.0,
        rms_norm_eps=1e-6,
        max_position_embeddings=64,
        tie_word_embeddings=tied,
        attention_dropout=0.0,
    )


def gemma3_config() -> Gemma3TextConfig:
    return Gemma3TextConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=16,  # != hidden / heads = 8
        query_pre_attn_scalar=12,  # != head_dim
        sliding_window=5,  # shorter than SEQ
        layer_types=["sliding_attention", "full_attention", "sliding_attention"],
        rope_theta=1_000_000.0,
        rope_local_base_freq=10_000.0,
        rms_norm_eps=1e-6,
        max_position_embeddings=64,
        tie_word_embeddings=True,
        rope_scaling=None,
        hidden_activation="gelu_pytorch_tanh",
        attention_dropout=0.0,
        final_logit_softcapping=None,
        attn_logit_softcapping=None,
    )


# --------------------------------------------------------------------------
# cases


@dataclass
class Case:
    name: str
    family: str
    seed: int
    build: Callable[[], torch.nn.Module]
    lora: dict | None = None


def _build(model_cls, config) -> torch.nn.Module:
    config._attn_implementation = "eager"
    model = model_cls(config)
    model.config._attn_implementation = "eager"
    return model


CASES = [
    Case("gpt2_full", "gpt2", 1001, lambda: _build(GPT2LMHeadModel, gpt2_config())),
    Case(
        "gpt2_lora",
        "gpt2",
        1002,
        lambda: _build(GPT2LMHeadModel, gpt2_config()),
        lora=dict(
            r=4,
            lora_alpha=8,
            target_modules=["c_attn", "c_proj", "c_fc"],
            lora_dropout=0.0,
            use_rslora=False,
            # GPT-2 uses transformers' Conv1D (weight stored [in, out]); PEFT
            # needs fan_in_fan_out=True for it (it would force it anyway, with
            # a warning).
            fan_in_fan_out=True,
        ),
    ),
    Case("qwen2_full", "qwen2", 2001, lambda: _build(Qwen2ForCausalLM, qwen2_config(tied=False))),
    Case(
        "qwen2_lora",
        "qwen2",
        2002,
        lambda: _build(Qwen2ForCausalLM, qwen2_config(tied=True)),
        lora=dict(
            r=4,
            lora_alpha=8,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
            lora_dropout=0.0,
            use_rslora=True,
        ),
    ),
    Case("gemma3_full", "gemma3", 3001, lambda: _build(Gemma3ForCausalLM, gemma3_config())),
    Case(
        "gemma3_lora",
        "gemma3",
        3002,
        lambda: _build(Gemma3ForCausalLM, gemma3_config()),
        lora=dict(
            r=4,
            lora_alpha=8,
            target_modules=["q_proj", "v_proj", "o_proj", "gate_proj", "down_proj"],
            lora_dropout=0.0,
            use_rslora=False,
        ),
    ),
]


# --------------------------------------------------------------------------
# float64 enforcement


def _f32_to_f64(x):
    if x is torch.float32:
        return torch.float64
    if isinstance(x, (list, tuple)):
        return type(x)(_f32_to_f64(v) for v in x)
    return x


def _tensors(x):
    if isinstance(x, torch.Tensor):
        yield x
    elif isinstance(x, (list, tuple)):
        for v in x:
            yield from _tensors(v)
    elif isinstance(x, dict):
        for v in x.values():
            yield from _tensors(v)


class Float32MeansFloat64(TorchFunctionMode):
    """Inside this mode float32 is promoted to float64 everywhere.

    * ``Tensor.float()`` becomes ``Tensor.double()``;
    * any ``torch.float32`` passed to a torch function (``.to(torch.float32)``,
      ``softmax(..., dtype=torch.float32)``, ``torch.zeros(..., dtype=...)``)
      is replaced by ``torch.float64``;
    * any torch function that still returns a float32 tensor raises.

    Backward follows the forward dtypes, so the gradients are float64 too.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.Tensor.float:
            func = torch.Tensor.double
        args = tuple(_f32_to_f64(a) for a in args)
        kwargs = {k: _f32_to_f64(v) for k, v in kwargs.items()}
        out = func(*args, **kwargs)
        for t in _tensors(out):
            if t.dtype == torch.float32:
                raise RuntimeError(f"float32 tensor produced by {func} inside the float64 reference")
        return out


# --------------------------------------------------------------------------
# helpers


@torch.no_grad()
def perturb(model: torch.nn.Module, gen: torch.Generator, std: float) -> None:
    # named_parameters() de-duplicates tied weights, so a tied head is
    # perturbed once, through the embedding.
    for _, p in model.named_parameters():
        p.add_(torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.dtype) * std)


@torch.no_grad()
def randomise_lora(model: torch.nn.Module, gen: torch.Generator, std: float) -> None:
    # PEFT initialises lora_B to zero.  With B = 0 every lora_A gradient is
    # exactly zero (dL/dA = B^T ...), so a test could not tell a broken
    # lora_A backward from a correct one.  Draw both A and B at random (A is
    # redrawn too so the fixture does not depend on PEFT's init scheme).
    n = 0
    for name, p in model.named_parameters():
        if ".lora_A." in name or ".lora_B." in name:
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.dtype) * std)
            n += 1
    assert n > 0, "no LoRA parameters found"


def make_batch(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    # Token 0 is excluded: Gemma3's embedding is an nn.Embedding with
    # padding_idx = pad_token_id = 0, which zeroes the input-side gradient of
    # that row.  Keeping it out of the inputs keeps the fixtures independent of
    # that quirk.
    input_ids = torch.randint(1, VOCAB, (BATCH, SEQ), generator=gen, dtype=torch.int64)
    labels = input_ids.clone()
    for row, positions in IGNORED_LABEL_POSITIONS.items():
        for pos in positions:
            labels[row, pos] = -100
    return input_ids, labels


def safetensors_keys(path: Path) -> list[str]:
    with safe_open(str(path), framework="pt") as f:
        return list(f.keys())


def adapter_key(param_name: str, adapter: str = "default") -> str:
    """PEFT parameter name -> key in adapter_model.safetensors."""
    return param_name.replace(f".{adapter}.", ".")


def canonicalise_safetensors_header(path: Path) -> None:
    """Rewrite the header of a safetensors file with its metadata keys sorted.

    The safetensors writer emits the ``__metadata__`` map in hash order, which
    changes from run to run; sorting it makes reruns byte-identical.  Only the
    order of the keys changes, so the header keeps its length and the tensor
    offsets stay valid.
    """
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    meta = header.pop("__metadata__", None)
    ordered = {}
    if meta is not None:
        ordered["__metadata__"] = dict(sorted(meta.items()))
    ordered.update(header)
    text = json.dumps(ordered, separators=(",", ":")).encode()
    if len(text) > n:
        raise RuntimeError(f"{path}: canonical header longer than the original")
    text += b" " * (n - len(text))
    path.write_bytes(raw[:8] + text + raw[8 + n :])


def canonicalise_adapter_config(path: Path) -> None:
    # PEFT stores target_modules as a set and writes it in hash order, which
    # varies between runs; sort it so reruns are byte-identical.
    text = path.read_text()
    cfg = json.loads(text)
    if isinstance(cfg.get("target_modules"), list):
        cfg["target_modules"] = sorted(cfg["target_modules"])
    out = json.dumps(cfg, indent=2, sort_keys=True)
    if text.endswith("\n"):
        out += "\n"
    path.write_text(out)


def clean_dir(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)


def prune_extra_files(path: Path) -> None:
    # save_pretrained also writes generation_config.json and PEFT a README.md
    # model card; the tests only need FILES_KEPT.
    for p in path.iterdir():
        if p.name not in FILES_KEPT:
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink()


# --------------------------------------------------------------------------
# main work


def run_case(case: Case, out_root: Path) -> dict:
    case_dir = out_root / case.name
    clean_dir(case_dir)

    torch.manual_seed(case.seed)
    gen = torch.Generator().manual_seed(case.seed)

    model = case.build().to(torch.float32)
    perturb(model, gen, PERTURB_STD)
    model.eval()
    # transformers 5 always writes safetensors; its save_pretrained no longer
    # takes safe_serialization.
    model.save_pretrained(str(case_dir))

    net: torch.nn.Module = model
    metadata = {
        "case": case.name,
        "family": case.family,
        "mode": "lora" if case.lora else "full",
        "seed": str(case.seed),
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "peft_version": peft.__version__,
        "safetensors_version": safetensors.__version__,
        "reference_dtype": "float64",
        "perturb_std": str(PERTURB_STD),
    }

    if case.lora:
        lcfg = LoraConfig(task_type="CAUSAL_LM", bias="none", **case.lora)
        net = get_peft_model(model, lcfg)
        randomise_lora(net, gen, LORA_STD)
        net.eval()
        net.save_pretrained(str(case_dir), safe_serialization=True)
        canonicalise_adapter_config(case_dir / "adapter_config.json")
        r, alpha = case.lora["r"], case.lora["lora_alpha"]
        scaling = alpha / (r**0.5) if case.lora["use_rslora"] else alpha / r
        metadata.update(
            {
                "lora_r": str(r),
                "lora_alpha": str(alpha),
                "lora_use_rslora": str(case.lora["use_rslora"]).lower(),
                "lora_target_modules": json.dumps(case.lora["target_modules"]),
                "lora_dropout": str(case.lora["lora_dropout"]),
                "lora_fan_in_fan_out": str(case.lora.get("fan_in_fan_out", False)).lower(),
                "lora_scaling": repr(scaling),
                "lora_std": str(LORA_STD),
            }
        )
    prune_extra_files(case_dir)

    input_ids, labels = make_batch(gen)

    # ---- float64 reference
    net.double()
    net.zero_grad(set_to_none=True)
    with Float32MeansFloat64():
        out = net(input_ids=input_ids, labels=labels)
        loss = out.loss
        assert loss.dtype == torch.float64 and out.logits.dtype == torch.float64
        loss.backward()

    tensors: dict[str, torch.Tensor] = {
        "input_ids": input_ids.contiguous(),
        "labels": labels.contiguous(),
        "logits": out.logits.detach().to(torch.float32).contiguous(),
        "loss": loss.detach().reshape(1).to(torch.float32),
    }
    metadata["loss_f64"] = repr(loss.item())

    trainable = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    if case.lora:
        file_keys = set(safetensors_keys(case_dir / "adapter_model.safetensors"))
        names = {adapter_key(n): p for n, p in trainable}
        assert all(".lora_" in n for n in names), "unexpected trainable non-LoRA parameter"
    else:
        file_keys = set(safetensors_keys(case_dir / "model.safetensors"))
        names = dict(trainable)
    if set(names) != file_keys:
        raise RuntimeError(
            f"{case.name}: gradient names and checkpoint keys differ:\n"
            f"  only in params: {sorted(set(names) - file_keys)}\n"
            f"  only in file:   {sorted(file_keys - set(names))}"
        )
    for name in sorted(names):
        p = names[name]
        assert p.grad is not None, f"{case.name}: no gradient for {name}"
        assert p.grad.dtype == torch.float64
        tensors[f"grad.{name}"] = p.grad.detach().to(torch.float32).contiguous()

    save_file(tensors, str(case_dir / "golden.safetensors"), metadata=metadata)
    canonicalise_safetensors_header(case_dir / "golden.safetensors")

    size = sum(p.stat().st_size for p in case_dir.iterdir())
    if size >= MAX_CASE_BYTES:
        raise RuntimeError(f"{case.name}: fixture directory is {size} bytes (limit {MAX_CASE_BYTES})")
    return {
        "case": case.name,
        "loss": loss.item(),
        "bytes": size,
        "n_grads": len(names),
        "files": sorted(p.name for p in case_dir.iterdir()),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="fixture root (default: %(default)s)")
    ap.add_argument("--case", action="append", choices=[c.name for c in CASES], help="only these cases")
    args = ap.parse_args()

    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)

    selected = [c for c in CASES if not args.case or c.name in args.case]
    args.out.mkdir(parents=True, exist_ok=True)
    rows = [run_case(c, args.out) for c in selected]

    print(f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}")
    print(f"{'case':<14} {'loss':>20} {'bytes':>9} {'grads':>6}  files")
    for r in rows:
        print(f"{r['case']:<14} {r['loss']:>20.15f} {r['bytes']:>9} {r['n_grads']:>6}  {', '.join(r['files'])}")
    print(f"written under {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
