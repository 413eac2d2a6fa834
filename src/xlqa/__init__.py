"""xlqa: zero-shot cross-lingual question answering.

Train a multilingual model on English SQuAD, evaluate it in every language with the official metrics.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
