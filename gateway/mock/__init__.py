"""A fake OpenAI + Anthropic provider for the demo, the tests and benchmarks.

Answers are deterministic (see `answers`); faults come from scripts queued on `MockState`
or from `x-mock-*` request headers (see `faults`).
"""

from gateway.mock.app import create_mock_app, run_mock
from gateway.mock.state import MOCK_STATE, MockState, RecordedRequest, ScriptStep

__all__ = [
    "MOCK_STATE",
    "MockState",
    "RecordedRequest",
    "ScriptStep",
    "create_mock_app",
    "run_mock",
]
