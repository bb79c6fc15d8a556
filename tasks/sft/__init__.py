"""Supervised fine-tuning (RECIPE.md §4, §8): dialogue sources, curation, packing with
prompt-loss masking, Ghost Attention, and the multi-turn evaluation.

Pure code works on dialogues as plain dicts shaped like one row of the `sft_dialogues`
contract; `tasks.records.dialogue_frame` turns a list of them into a DataFrame with the
contract's types. The chat format itself is shared (tasks/chat/format.py).
"""
