"""Reward models (RECIPE.md §6): the Helpfulness / Safety data mix, pairs encoded in the chat
format and batched for the shared loop, and the evaluation (accuracy per rating level as in the
paper's Table 8, unsafe-response recall, calibration)."""
