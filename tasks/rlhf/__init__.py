"""Iterative RLHF (RECIPE.md §7): rejection sampling, PPO with the safety-gated reward, rounds
V1..Vn."""
