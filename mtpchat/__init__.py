"""mtpchat: local chat with multi-token prediction on a patched llama.cpp."""
__version__ = "0.1.0"
