# the reward tests' small sentencepiece model (trained on their chat strings), shared here
from tests.unit.reward.test_data import sp  # noqa: F401
