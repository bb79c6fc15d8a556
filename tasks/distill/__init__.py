"""Safety context distillation (RECIPE.md §9): safety preprompts and the Safety-RM filter."""
