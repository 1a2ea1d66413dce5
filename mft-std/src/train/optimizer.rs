//! Optimizers over groups of trainable f32 tensors: AdamW (decoupled weight decay, as
//! `torch.optim.AdamW`) and SGD (plain unless a momentum is given, as `torch.optim.SGD`), on the
//! kernels of mft-kernels. Weight decay applies only to the groups that ask for it: the Hugging
//! Face Trainer decays matrices but not biases and norm weights, and so does mft.

use std::fmt;
use std::str::FromStr;

use mft_kernels::{AdamW, Kernels, Parallel, Sgd};

/// Which optimizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// AdamW (betas 0.9, 0.999, eps 1e-8).
    AdamW,
    /// SGD, with optional momentum.
    Sgd,
}

impl FromStr for OptimizerKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "adamw" => Ok(OptimizerKind::AdamW),
            "sgd" => Ok(OptimizerKind::Sgd),
            other => Err(format!("unknown optimizer `{other}` (adamw, sgd)")),
        }
    }
}

impl fmt::Display for OptimizerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OptimizerKind::AdamW => "adamw",
            OptimizerKind::Sgd => "sgd",
        })
    }
}

/// The optimizer's settings (the learning rate comes per step from the schedule).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OptimizerConfig {
    /// Which optimizer.
    pub kind: OptimizerKind,
    /// SGD momentum (0: plain SGD).
    pub momentum: f32,
    /// AdamW: decoupled decay; SGD: L2 penalty. Only on groups that decay.
    pub weight_decay: f32,
}

/// One group of trainable tensors as a step sees it.
pub struct Group<'a> {
    /// The parameters.
    pub params: &'a mut [f32],
    /// Their gradients.
    pub grads: &'a [f32],
    /// Whether weight decay applies.
    pub decay: bool,
}

/// The optimizer with its state: per group, AdamW's two moments or SGD's momentum buffer.
#[derive(Debug, Clone, PartialEq)]
pub struct Optimizer {
    config: OptimizerConfig,
    /// Per group, the state tensors (AdamW: `[m, v]`; SGD with momentum: `[buffer]`; plain SGD:
    /// none).
    state: Vec<Vec<Vec<f32>>>,
}

impl Optimizer {
    /// An optimizer for groups of `group_lens` parameters, its state zero.
    pub fn new(config: OptimizerConfig, group_lens: &[usize]) -> Optimizer {
        let tensors = config.state_tensors();
        let state = group_lens.iter().map(|&n| vec![vec![0.0; n]; tensors]).collect();
        Optimizer { config, state }
    }

    /// The settings.
    pub fn config(&self) -> &OptimizerConfig {
        &self.config
    }

    /// The state tensors, per group (for checkpoints).
    pub fn state(&self) -> &[Vec<Vec<f32>>] {
        &self.state
    }

    /// The state tensors, per group, to restore from a checkpoint.
    pub fn state_mut(&mut self) -> &mut [Vec<Vec<f32>>] {
        &mut self.state
    }

    /// Step `step` (from 1) at learning rate `lr` over `groups` (in the order of `new`).
    pub fn step(
        &mut self,
        kernels: &Kernels,
        lr: f32,
        step: u64,
        groups: &mut [Group<'_>],
        parallel: &dyn Parallel,
    ) {
        assert_eq!(groups.len(), self.state.len(), "optimizer: groups differ from its state");
        for (group, state) in groups.iter_mut().zip(&mut self.state) {
            let mut state: Vec<&mut [f32]> = state.iter_mut().map(|s| &mut s[..]).collect();
            let update = self.config.update(kernels, lr, step, group.decay);
            update(group.params, group.grads, &mut state, parallel);
        }
    }
}

impl OptimizerConfig {
    /// The element-wise update of step `step` at rate `lr` for a group that decays or not:
    /// `(params, grads, state, parallel)`, the state tensors in the order of
    /// [`Optimizer::state`]. It may be applied to a group whole or piece by piece: each element's
    /// result is the same.
    #[allow(clippy::type_complexity)] // the update's four operands
    pub(crate) fn update(
        &self,
        kernels: &Kernels,
        lr: f32,
        step: u64,
        decay: bool,
    ) -> impl Fn(&mut [f32], &[f32], &mut [&mut [f32]], &dyn Parallel) + use<> {
        let config = *self;
        let kernels = *kernels;
        let weight_decay = if decay { config.weight_decay } else { 0.0 };
        move |params, grads, state, parallel| match config.kind {
            OptimizerKind::AdamW => {
                let hyper = AdamW { lr, weight_decay, ..AdamW::default() };
                let [m, v] = state else { unreachable!("AdamW keeps two moments") };
                kernels.adamw_step(&hyper, step, params, grads, m, v, parallel);
            }
            OptimizerKind::Sgd => {
                let hyper = Sgd { lr, momentum: config.momentum, weight_decay, ..Sgd::default() };
                let buffer = state.first_mut().map_or(&mut [][..], |b| &mut b[..]);
                kernels.sgd_step(&hyper, step, params, grads, buffer, parallel);
            }
        }
    }
}

impl OptimizerConfig {
    /// State tensors per group.
    pub(crate) fn state_tensors(&self) -> usize {
        match self.kind {
            OptimizerKind::AdamW => 2,
            OptimizerKind::Sgd if self.momentum != 0.0 => 1,
            OptimizerKind::Sgd => 0,
        }
    }
}
