"""Evaluations over a bundle: ``locomo.py`` runs the memory loop on LoCoMo (scores, time per
operation, task-level parity against PyTorch). The LoCoMo data reader and the F1/BLEU-1 metrics
live with the memory loop (``memlora.memory.locomo``, ``memlora.memory.metrics``)."""
