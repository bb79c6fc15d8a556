"""Shared chat layer: the Llama 2 chat format and its tokenisation, fitting prompts to a model's
window, answering prompts with a model, HH transcripts, and the typed `Prompt` the stages pass."""
