"""The multi-turn consistency plot (paper Table 30): recall of the first-turn instruction by turn."""

from __future__ import annotations

import io

import polars as pl


def plot_recall(table: pl.DataFrame) -> bytes:
    """PNG bytes: one line per model, recall (%) against turn, with the evaluated counts."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=100)
    ax = fig.subplots()
    for (model,), group in table.sort("turn").group_by(["model"], maintain_order=True):
        group = group.filter(pl.col("recall").is_not_null())
        ax.plot(group["turn"].to_list(), [100 * r for r in group["recall"].to_list()], marker="o",
                label=model)
        for turn, recall, n in zip(group["turn"], group["recall"], group["evaluated"]):
            ax.annotate(f"n={n}", (turn, 100 * recall), textcoords="offset points", xytext=(0, 6),
                        fontsize=7, ha="center")
    ax.set_xlabel("dialogue turn")
    ax.set_ylabel("answers following the first-turn instruction (%)")
    ax.set_ylim(-5, 110)
    ax.set_title("Multi-turn consistency (Llama 2 Table 30)")
    ax.grid(alpha=0.3)
    ax.legend()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()
