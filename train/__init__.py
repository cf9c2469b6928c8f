"""Gated-LoRA + sampler trainer (imported as mtpchat.train); needs the [train] extra."""
