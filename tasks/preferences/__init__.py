"""Human preference data (RECIPE.md §5): binary comparisons of two responses to one prompt.

The rule annotator (`tasks.judges.annotator`) is a stand-in for human annotators (no people
label data here, DESIGN.md), behind an `Annotator` protocol; `files.py` reads labels that people
collected (our Parquet contract, Anthropic HH-RLHF JSONL). Rows are plain dicts shaped like one
row of the `preference_pairs` contract; `tasks.records.dialogue_frame(rows, "preference_pairs")`
types them.
"""
