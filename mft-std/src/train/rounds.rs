//! Federated rounds over one [`Trainer`]: each round starts from the global adapters the
//! server sends ([`Trainer::begin_round`]: fresh optimizer state, step count 0, the round's
//! seed and learning rate), and FedProx's proximal term ([`Proximal`]) keeps the local
//! adapters near the global ones.
//!
//! FedProx (Li et al., 2020) adds `mu/2 · ||w − w_global||²` to the local loss; its gradient
//! `mu · (w − w_global)` is added to each adapter's gradient after the micro-batches are
//! accumulated and before clipping and the optimizer step, as a PyTorch loop that adds the
//! term to the loss before `backward()` would. The reported loss stays the cross-entropy.
//! Only LoRA trains in rounds: the anchor is the adapters, not the whole model.

use mft_core::Element;
use mft_kernels::GemmRhs;

use super::{Trainable, Trainer};
use crate::error::{Error, Result};

/// FedProx's proximal term: its weight and the global adapters it pulls towards.
#[derive(Debug, Clone, PartialEq)]
pub struct Proximal {
    /// `mu` (0 turns the term off).
    pub mu: f32,
    /// The global adapters of the round.
    pub anchor: Vec<f32>,
}

impl Proximal {
    /// `mu/2 · ||w − anchor||²` at `w`.
    pub fn value(&self, w: &[f32]) -> f64 {
        let sum: f64 = w.iter().zip(&self.anchor).map(|(&a, &b)| f64::from(a - b).powi(2)).sum();
        0.5 * f64::from(self.mu) * sum
    }

    /// Adds the term's gradient `mu · (w − anchor)` to `grads`.
    pub fn add_gradient(&self, w: &[f32], grads: &mut [f32]) {
        assert_eq!(w.len(), self.anchor.len(), "proximal term: adapters and anchor differ");
        assert_eq!(w.len(), grads.len(), "proximal term: adapters and gradients differ");
        for ((g, &x), &a) in grads.iter_mut().zip(w).zip(&self.anchor) {
            *g += self.mu * (x - a);
        }
    }
}

/// How a federated round starts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoundStart {
    /// Seed of the round's dropout masks (vary it per round).
    pub seed: u64,
    /// The learning rate of the round (the schedule's peak).
    pub lr: f32,
    /// FedProx's `mu`; `None` or 0: plain local training (FedAvg).
    pub proximal_mu: Option<f32>,
}

/// The gradient of the proximal term, added to the accumulated gradients (called by
/// [`Trainer::train_step`]).
pub(super) fn add_proximal_gradient(
    proximal: Option<&Proximal>,
    trainable: &Trainable,
    grads: &mut [Vec<f32>],
) {
    if let (Some(p), Trainable::Lora { adapters, .. }, [g]) = (proximal, trainable, grads) {
        p.add_gradient(adapters, g);
    }
}

impl<T: GemmRhs + Element + Send + Sync> Trainer<T> {
    /// Starts a federated round from `adapters` (the global LoRA adapters, in this trainer's
    /// layout): they replace the trained adapters, the optimizer state and the step count
    /// restart from zero (a fresh local optimizer, as each round of FedAvg and FedProx starts),
    /// and the round's seed, learning rate and proximal term apply from the next step.
    ///
    /// # Errors
    /// [`Error::Training`] for full fine-tuning, adapters of another length, a non-finite or
    /// negative `mu`, or a learning rate that is not finite.
    pub fn begin_round(&mut self, adapters: &[f32], round: RoundStart) -> Result<()> {
        let mu = round.proximal_mu.unwrap_or(0.0);
        if !mu.is_finite() || mu < 0.0 {
            return Err(Error::Training { problem: format!("proximal-mu {mu} must be ≥ 0") });
        }
        if !round.lr.is_finite() || round.lr < 0.0 {
            return Err(Error::Training { problem: format!("lr {} must be ≥ 0", round.lr) });
        }
        self.set_adapters(adapters)?;
        for group in self.optimizer.state_mut() {
            group.iter_mut().for_each(|t| t.fill(0.0));
        }
        self.step = 0;
        self.options.seed = round.seed;
        self.options.schedule.peak_lr = round.lr;
        self.proximal = (mu > 0.0).then(|| Proximal { mu, anchor: adapters.to_vec() });
        Ok(())
    }

    /// Replaces the LoRA adapters (to evaluate global adapters, or to start a round).
    ///
    /// # Errors
    /// [`Error::Training`] for full fine-tuning or adapters of another length.
    pub fn set_adapters(&mut self, new: &[f32]) -> Result<()> {
        match &mut self.trainable {
            Trainable::Lora { adapters, .. } if adapters.len() == new.len() => {
                adapters.copy_from_slice(new);
                Ok(())
            }
            Trainable::Lora { adapters, .. } => Err(Error::Training {
                problem: format!(
                    "{} adapter values given; the LoRA layout has {}",
                    new.len(),
                    adapters.len()
                ),
            }),
            Trainable::Full => Err(Error::Training {
                problem: "federated rounds train LoRA adapters, not full fine-tuning".into(),
            }),
        }
    }

    /// The proximal term of the current round, if any.
    pub fn proximal(&self) -> Option<&Proximal> {
        self.proximal.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gradient_is_mu_times_the_distance_and_matches_finite_differences() {
        let p = Proximal { mu: 0.3, anchor: vec![1.0, -2.0, 0.5] };
        let w = [1.5f32, -2.0, 0.0];
        let mut g = vec![1.0f32; 3];
        p.add_gradient(&w, &mut g);
        assert_eq!(g, vec![1.0 + 0.3 * 0.5, 1.0, 1.0 + 0.3 * -0.5]);
        let h = 1e-3f32;
        for i in 0..3 {
            let (mut up, mut down) = (w, w);
            up[i] += h;
            down[i] -= h;
            let numeric = (p.value(&up) - p.value(&down)) / (2.0 * f64::from(h));
            assert!((numeric - f64::from(g[i] - 1.0)).abs() < 1e-3, "{i}: {numeric}");
        }
        assert!((p.value(&w) - 0.5 * 0.3 * 0.5).abs() < 1e-6);
    }
}
