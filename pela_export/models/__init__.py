"""Model sources (timm, Hugging Face, torch.export, factories, the embedded default) and their I/O description."""
