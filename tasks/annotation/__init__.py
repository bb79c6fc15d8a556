"""Labelling by people: the annotation store (batches, items, labels with revisions), the
annotation page (`python -m flows.annotate serve`), the annotators file and label-quality
metrics (agreement, gold accuracy, the rule annotator against people)."""
