"""Tasks: models wrapped for export (the what), kept apart from backends (the how).

``decoder`` holds the KV-cache text decoder task; ``lora`` the unfused LoRA linear and exact
fusing; ``names`` the graph names every party agrees on. The vision encoder and the
embeddings-input decoder of MemLoRA-V are further task types of the same shape: a torch module with
named inputs/outputs plus the adapters that apply to it. Nothing is imported here eagerly, so a
runtime that only runs exported files never imports torch.
"""
