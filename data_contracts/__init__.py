"""Data contracts: one module per dataset (pandera polars model, explicit pyarrow schema,
version)."""

from data_contracts import (
    demographics,
    distillation_samples,
    documents,
    documents_excluded,
    eval_results,
    multiturn_eval,
    preference_excluded,
    preference_pairs,
    quarantine,
    raw_documents,
    rejection_samples,
    rlhf_eval,
    sft_dialogues,
    sft_examples,
    sft_excluded,
    tokenizer_eval,
    toxicity_scores,
)
from data_contracts.base import Contract, ContractError

CONTRACTS: dict[str, Contract] = {
    m.CONTRACT.name: m.CONTRACT
    for m in (
        raw_documents,
        documents,
        documents_excluded,
        quarantine,
        toxicity_scores,
        demographics,
        tokenizer_eval,
        sft_dialogues,
        sft_excluded,
        sft_examples,
        multiturn_eval,
        preference_pairs,
        preference_excluded,
        rejection_samples,
        rlhf_eval,
        distillation_samples,
        eval_results,
    )
}


def get_contract(name: str) -> Contract:
    try:
        return CONTRACTS[name]
    except KeyError:
        raise KeyError(f"no data contract named '{name}'; known: {sorted(CONTRACTS)}") from None


__all__ = ["CONTRACTS", "Contract", "ContractError", "get_contract"]
