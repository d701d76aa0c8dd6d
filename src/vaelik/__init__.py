"""vaelik: train variational autoencoders with Lightning + Hydra and measure log p(x) honestly."""

__version__ = "0.2.0"
