"""Flower app for federated LoRA fine-tuning with mft-fl clients."""
