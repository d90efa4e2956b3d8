"""The response cache: exact-match keys, stored complete answers, replay, single-flight."""
