"""Shared judges, the project's measuring instruments: the rule annotator (a stand-in for
people), the refusal rule, answer checks against references, toxicity scoring, and scoring with
the reward models. Stages use them; none of them imports a stage."""
