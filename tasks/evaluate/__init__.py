"""Safety, toxicity and truthfulness evaluation (RECIPE.md §9): prompt sources and metrics."""
