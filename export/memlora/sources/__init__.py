"""Where models and adapters come from: ``model_io`` (HF model folders), ``adapters`` (PEFT LoRA
read, validate, fuse in float64), ``presets`` (seeded tiny models), ``tokenizer_train`` (their
tokenizers) and ``resolve`` (what the user named -> checked :class:`~memlora.sources.resolve.Sources`)."""
