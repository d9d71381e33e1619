"""labtui: a terminal lab console for ablation studies of small GPT models."""

__version__ = "0.1.0"
