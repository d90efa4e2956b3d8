"""Prompt evaluation: run prompts A and B over a test set through the gateway and compare them."""
