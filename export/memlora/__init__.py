"""memlora: memory-augmented small language models with LoRA adapters, exported for phones."""
__version__ = "0.1.0"
