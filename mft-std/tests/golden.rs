//! Golden tests: every family against Hugging Face transformers + PEFT.
//!
//! `scripts/golden_fixtures.py` (not run by CI) built tiny random models of each family, saved
//! them with `save_pretrained`, and recorded in float64 the logits, the loss and the gradient of
//! every parameter (full fine-tuning) or every LoRA tensor (PEFT) on fixed token ids and labels
//! with ignored (−100) positions. The cases cover GQA, a sliding window shorter than the
//! sequence, query_pre_attn_scalar ≠ head_dim, tied and untied heads, and rsLoRA. This test
//! loads each case through mft-std's loaders, runs mft's step, and compares: logits and loss
//! within 1e-4 relative, every gradient within 1e-3 relative (with an absolute floor of 1e-3 of
//! the tensor's largest magnitude for elements near zero).
//!
//! The same cases also run with a GEMM offload backend installed in the kernels (a scalar
//! reference that records each product it is given): the results must still match the
//! reference, and the records must show that every product of the linear layers, the adapters
//! and the LM head, forward and backward, went through the hook. A backend that declines every
//! product must leave the results bit for bit those of no backend.

use std::path::{Path, PathBuf};

use std::sync::Mutex;

use mft_kernels::{GemmOffload, Kernels, Mat, MatMut, OffloadRhs, Sequential};
use mft_models::{
    Adapters, Batch, GlobalParam, Gradients, LoraLayout, Model, ModelConfig, Param, ParamLayout,
    Purpose, StepOptions, shift_labels,
};
use mft_std::ThreadPool;
use mft_std::hf::ModelWeights;
use mft_std::hf::adapter::read_lora_config;
use mft_std::hf::checkpoint::{load_adapters, load_weights};
use mft_std::hf::config::read_model_config;
use safetensors::{Dtype, SafeTensors};

mod common;
use common::assert_close;

const LOGITS_RTOL: f32 = 1e-4;
const GRAD_RTOL: f32 = 1e-3;

fn fixture_dir(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../mft-models/tests/fixtures").join(case)
}

/// The recorded reference of one case.
struct Golden {
    bytes: Vec<u8>,
}

impl Golden {
    fn open(dir: &Path) -> Golden {
        let path = dir.join("golden.safetensors");
        Golden { bytes: std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())) }
    }

    fn tensors(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).expect("golden.safetensors parses")
    }

    fn f32s(&self, name: &str) -> Vec<f32> {
        let st = self.tensors();
        let t = st.tensor(name).unwrap_or_else(|_| panic!("golden tensor {name} is missing"));
        assert_eq!(t.dtype(), Dtype::F32, "{name}");
        t.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
    }

    fn i64s(&self, name: &str) -> (Vec<i64>, Vec<usize>) {
        let st = self.tensors();
        let t = st.tensor(name).unwrap_or_else(|_| panic!("golden tensor {name} is missing"));
        assert_eq!(t.dtype(), Dtype::I64, "{name}");
        let values = t.data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap()));
        (values.collect(), t.shape().to_vec())
    }

    /// Names of the recorded gradients (without the `grad.` prefix).
    fn gradient_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .tensors()
            .names()
            .into_iter()
            .filter_map(|n| n.strip_prefix("grad.").map(String::from))
            .collect();
        names.sort();
        names
    }
}

/// What one case's run leaves: the model's buffers (to match recorded addresses against) and
/// its results.
struct Run {
    config: ModelConfig,
    layout: ParamLayout,
    lora: Option<LoraLayout>,
    weights: ModelWeights<f32>,
    adapters: Option<Vec<f32>>,
    d_matrices: Vec<f32>,
    d_adapters: Vec<f32>,
    loss: f32,
}

/// Runs one case and compares logits, loss and every gradient with the reference.
fn check_case(case: &str, threads: usize) {
    check_case_with(case, threads, None, &|| {});
}

/// [`check_case`] with `offload` installed in the kernels; `between` runs after the logits
/// (evaluation) and before the training step.
fn check_case_with(
    case: &str,
    threads: usize,
    offload: Option<&'static dyn GemmOffload>,
    between: &dyn Fn(),
) -> Run {
    let dir = fixture_dir(case);
    let golden = Golden::open(&dir);
    let config = read_model_config(&dir.join("config.json")).unwrap();
    let model = Model::new(config).unwrap();
    let layout = *model.layout();
    let weights = load_weights::<f32>(&[dir.join("model.safetensors")], &layout).unwrap();
    let lora_layout = dir.join("adapter_config.json").exists().then(|| {
        let lora = read_lora_config(&dir.join("adapter_config.json"), config.family).unwrap();
        LoraLayout::new(&config, &lora)
    });
    let adapter_weights = lora_layout
        .as_ref()
        .map(|l| load_adapters(&dir.join("adapter_model.safetensors"), l).unwrap());
    let adapters = lora_layout
        .as_ref()
        .zip(adapter_weights.as_deref())
        .map(|(layout, weights)| Adapters { layout, weights });

    let (ids, shape) = golden.i64s("input_ids");
    let (batch, seq) = (shape[0], shape[1]);
    let ids: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
    let labels: Vec<i32> = golden.i64s("labels").0.iter().map(|&l| l as i32).collect();
    let mut targets = vec![0; labels.len()];
    shift_labels(&labels, seq, &mut targets);

    let kernels = Kernels::best().with_gemm_offload(offload);
    let pool = ThreadPool::new(threads).unwrap();
    let parallel: &dyn mft_kernels::Parallel = if threads == 1 { &Sequential } else { &pool };

    // Logits (evaluation).
    let lora = lora_layout.as_ref();
    let len = model.workspace_len(&kernels, lora, batch, seq, Purpose::Logits, threads);
    let mut workspace = vec![f32::NAN; len];
    let mut logits = vec![0.0; batch * seq * config.vocab];
    model
        .logits(
            &kernels,
            weights.as_weights(),
            adapters,
            &ids,
            batch,
            seq,
            &mut logits,
            &mut workspace,
            parallel,
        )
        .unwrap();
    assert_close(&format!("{case}: logits"), &logits, &golden.f32s("logits"), LOGITS_RTOL, 1e-2);

    between();
    // Loss and gradients (training step; the fixtures use no dropout).
    let purpose = Purpose::Train { checkpointed_blocks: 0 };
    let len = model.workspace_len(&kernels, lora, batch, seq, purpose, threads);
    let mut workspace = vec![f32::NAN; len];
    let (mut d_matrices, mut d_vectors) =
        (vec![0.0; layout.matrix_len()], vec![0.0; layout.vector_len()]);
    let mut d_adapters = vec![0.0; lora.map_or(0, |l| l.len())];
    let grads = match lora {
        Some(_) => Gradients::Lora(&mut d_adapters),
        None => Gradients::Full { matrices: &mut d_matrices, vectors: &mut d_vectors },
    };
    let data = Batch { input_ids: &ids, targets: &targets, batch, seq };
    let loss = model
        .train_step(
            &kernels,
            weights.as_weights(),
            adapters,
            grads,
            &data,
            StepOptions::default(),
            &mut workspace,
            parallel,
        )
        .unwrap();
    assert_close(&format!("{case}: loss"), &[loss.loss], &golden.f32s("loss"), LOGITS_RTOL, 0.0);

    // Every recorded gradient, by name, and nothing recorded is left unchecked.
    let mut expected_names = golden.gradient_names();
    let mut checked = Vec::new();
    match lora {
        Some(l) => {
            for (layer, param, is_b) in l.tensors() {
                let name = l.name(layer, param, is_b).to_string();
                let ours = &d_adapters[l.range(layer, param, is_b)];
                let theirs = golden.f32s(&format!("grad.{name}"));
                assert_close(&format!("{case}: ∂{name}"), ours, &theirs, GRAD_RTOL, 1e-3);
                checked.push(name);
            }
        }
        None => {
            for param in layout.params() {
                let name = param.name(config.family).to_string();
                let slot = layout.slot(param).unwrap();
                let store = if slot.matrix { &d_matrices } else { &d_vectors };
                let theirs = golden.f32s(&format!("grad.{name}"));
                assert_close(
                    &format!("{case}: ∂{name}"),
                    &store[slot.range()],
                    &theirs,
                    GRAD_RTOL,
                    1e-3,
                );
                checked.push(name);
            }
        }
    }
    checked.sort();
    expected_names.sort();
    assert_eq!(checked, expected_names, "{case}: the gradients mft computes are the ones recorded");
    Run {
        config,
        layout,
        lora: lora_layout,
        weights,
        adapters: adapter_weights,
        d_matrices,
        d_adapters,
        loss: loss.loss,
    }
}

#[test]
fn gpt2_full_fine_tuning_matches_transformers() {
    check_case("gpt2_full", 1);
}

#[test]
fn gpt2_lora_matches_peft() {
    check_case("gpt2_lora", 2);
}

#[test]
fn qwen2_full_fine_tuning_matches_transformers() {
    check_case("qwen2_full", 2);
}

#[test]
fn qwen2_lora_matches_peft() {
    check_case("qwen2_lora", 1);
}

#[test]
fn gemma3_full_fine_tuning_matches_transformers() {
    check_case("gemma3_full", 1);
}

#[test]
fn gemma3_lora_matches_peft() {
    check_case("gemma3_lora", 2);
}

/// One product an offload backend was given: the byte ranges of its `B` and `C` slices (as far
/// as the views reach), and whether it came after [`Recorder::start_training`].
#[derive(Debug, Clone, Copy)]
struct Call {
    b: (usize, usize),
    c: (usize, usize),
    training: bool,
}

/// A test offload backend: computes each product with a scalar f64 reference (or declines it)
/// and records it.
#[derive(Debug)]
struct Recorder {
    decline: bool,
    training: Mutex<bool>,
    calls: Mutex<Vec<Call>>,
}

impl Recorder {
    fn leak(decline: bool) -> &'static Recorder {
        Box::leak(Box::new(Recorder {
            decline,
            training: Mutex::new(false),
            calls: Mutex::new(Vec::new()),
        }))
    }

    fn start_training(&self) {
        *self.training.lock().unwrap() = true;
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
}

/// The byte range a strided view reaches in its slice.
fn reach<T>(m: &Mat<'_, T>) -> (usize, usize) {
    let start = m.data().as_ptr() as usize;
    let last = (m.rows() - 1) * m.row_stride() + (m.cols() - 1) * m.col_stride();
    (start, start + (last + 1) * size_of::<T>())
}

impl GemmOffload for Recorder {
    fn name(&self) -> &str {
        "test recorder"
    }

    fn gemm(
        &self,
        alpha: f32,
        a: Mat<'_, f32>,
        b: OffloadRhs<'_>,
        beta: f32,
        c: &mut MatMut<'_>,
    ) -> bool {
        let OffloadRhs::F32(b) = b else { panic!("the golden cases have f32 weights") };
        let (m, n, k) = (a.rows(), b.cols(), a.cols());
        if m == 0 || n == 0 {
            return self.decline;
        }
        let ldc = c.row_stride();
        let c_start = c.data_mut().as_ptr() as usize;
        let call = Call {
            b: if k == 0 { (0, 0) } else { reach(&b) },
            c: (c_start, c_start + ((m - 1) * ldc + n) * 4),
            training: *self.training.lock().unwrap(),
        };
        self.calls.lock().unwrap().push(call);
        if self.decline {
            return false;
        }
        let (ad, bd) = (a.data(), b.data());
        let (ars, acs, brs, bcs) = (a.row_stride(), a.col_stride(), b.row_stride(), b.col_stride());
        let out = c.data_mut();
        for i in 0..m {
            for j in 0..n {
                let dot: f64 = (0..k)
                    .map(|p| ad[i * ars + p * acs] as f64 * bd[p * brs + j * bcs] as f64)
                    .sum();
                let old = if beta == 0.0 { 0.0 } else { beta as f64 * out[i * ldc + j] as f64 };
                out[i * ldc + j] = (alpha as f64 * dot + old) as f32;
            }
        }
        true
    }
}

/// The byte range of a slice.
fn span(s: &[f32]) -> (usize, usize) {
    let start = s.as_ptr() as usize;
    (start, start + size_of_val(s))
}

fn inside(range: (usize, usize), of: (usize, usize)) -> bool {
    range.0 >= of.0 && range.1 <= of.1 && range.0 < range.1
}

/// Checks from the recorded products that every GEMM of the case went through the hook.
fn check_dispatch(case: &str, run: &Run, calls: &[Call]) {
    let (eval, train): (Vec<Call>, Vec<Call>) = calls.iter().partition(|c| !c.training);
    assert!(!eval.is_empty() && !train.is_empty(), "{case}: products in both phases");
    let reads =
        |phase: &[Call], of: (usize, usize)| phase.iter().filter(|c| inside(c.b, of)).count();
    let writes = |of: (usize, usize)| train.iter().filter(|c| inside(c.c, of)).count();
    let weights = run.weights.as_weights();
    let mut linear = 0;
    for param in run.layout.params() {
        let slot = run.layout.slot(param).unwrap();
        if !slot.matrix {
            continue;
        }
        let w = span(weights.matrix(&run.layout, param));
        let name = param.name(run.config.family);
        match param {
            Param::Layer(..) => {
                linear += 1;
                // Forward once in evaluation; forward and dx = dy·W in the training step.
                assert_eq!(reads(&eval, w), 1, "{case}: {name} read by the evaluation's products");
                assert_eq!(reads(&train, w), 2, "{case}: {name} read by the step's products");
                if run.lora.is_none() {
                    let dw = span(&run.d_matrices[slot.range()]);
                    assert_eq!(writes(dw), 1, "{case}: ∂{name} written by one product");
                }
            }
            Param::Global(GlobalParam::Embed | GlobalParam::LmHead) => {
                let is_head = matches!(param, Param::Global(GlobalParam::LmHead))
                    || run.config.tie_embeddings;
                if is_head {
                    // The fused head: logits forward, and d(hidden) in backward.
                    assert!(reads(&eval, w) >= 1, "{case}: the head {name} in evaluation");
                    assert!(reads(&train, w) >= 2, "{case}: the head {name} in the step");
                    if run.lora.is_none() {
                        let dw = span(&run.d_matrices[slot.range()]);
                        assert!(writes(dw) >= 1, "{case}: ∂{name} written by the head's products");
                    }
                }
            }
            Param::Global(_) => {}
        }
    }
    assert!(linear > 0, "{case}: the model has linear layers");
    if let (Some(lora), Some(adapters)) = (&run.lora, &run.adapters) {
        for (layer, param, is_b) in lora.tensors() {
            let range = lora.range(layer, param, is_b);
            let name = lora.name(layer, param, is_b).to_string();
            let t = span(&adapters[range.clone()]);
            // Forward (u = x·Aᵀ, y += u·Bᵀ) and backward (dx += du·A, du = dy·B).
            assert_eq!(reads(&train, t), 2, "{case}: {name} read by the step's products");
            assert_eq!(writes(span(&run.d_adapters[range])), 1, "{case}: ∂{name} written once");
        }
    }
}

#[test]
fn every_gemm_of_a_step_goes_through_an_offload_and_still_matches_the_reference() {
    for (case, threads) in [
        ("gpt2_full", 1),
        ("gpt2_lora", 2),
        ("qwen2_full", 1),
        ("qwen2_lora", 2),
        ("gemma3_full", 2),
        ("gemma3_lora", 1),
    ] {
        let recorder = Recorder::leak(false);
        let run = check_case_with(case, threads, Some(recorder), &|| recorder.start_training());
        check_dispatch(case, &run, &recorder.calls());
    }
}

#[test]
fn a_declining_offload_leaves_results_identical() {
    // Frozen heads only: a trained head's fused loss takes its whole-product path when a backend
    // is installed (so that the backend is offered those products) and its token-block path on
    // the CPU alone, which round differently. Both full fine-tuning runs are checked against
    // the fixtures by `check_case_with` (and the offload one by the dispatch test above).
    for (case, threads) in [("gpt2_lora", 2), ("qwen2_lora", 1)] {
        let plain = check_case_with(case, threads, None, &|| {});
        let decliner = Recorder::leak(true);
        let declined =
            check_case_with(case, threads, Some(decliner), &|| decliner.start_training());
        assert!(decliner.calls().len() > 10, "{case}: the decliner was offered the products");
        assert_eq!(plain.loss.to_bits(), declined.loss.to_bits(), "{case}: loss");
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert!(bits(&plain.d_matrices) == bits(&declined.d_matrices), "{case}: ∂ matrices");
        assert!(bits(&plain.d_adapters) == bits(&declined.d_adapters), "{case}: ∂ adapters");
    }
}
