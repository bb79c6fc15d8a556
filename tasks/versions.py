"""Model version names that more than one stage uses (the evaluation table's rows, model cards,
the promotion gate)."""

# the mean of the last RLHF rounds' weights (rlhf.average_last > 1, tasks/rlhf/average.py),
# registered by the RLHF stage's own run
AVERAGED_VERSION = "rlhf-avg"
