"""Checkpoint → self-contained MTP GGUF (imported as mtpchat.convert)."""
