"""Reading the prompt out of each request format: one text per message, and the last user text.

Malformed shapes (a number where a list belongs, unknown content parts) are read as empty
text rather than refused: the mock answers whatever a client under test sends.
"""

from __future__ import annotations

from typing import Any

from gateway.mock.answers import Prompt


def content_text(content: Any) -> str:
    """The text of a message content: a string, or a list of text parts joined by newlines."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    parts: list[str] = []
    for part in content:
        if isinstance(part, str):
            parts.append(part)
        elif isinstance(part, dict):
            text = part.get("text")
            if isinstance(text, str):
                parts.append(text)
            elif "content" in part:  # Anthropic tool_result blocks nest their content
                parts.append(content_text(part["content"]))
    return "\n".join(parts)


def _messages_prompt(head: list[str], messages: Any) -> Prompt:
    texts = list(head)
    last_user = ""
    for message in messages if isinstance(messages, list) else ():
        if not isinstance(message, dict):
            continue
        text = content_text(message.get("content"))
        texts.append(text)
        if message.get("role") == "user":
            last_user = text
    return Prompt(texts=tuple(texts), last_user=last_user)


def chat_prompt(body: dict[str, Any]) -> Prompt:
    """OpenAI chat: every message, system and developer ones included."""
    return _messages_prompt([], body.get("messages"))


def anthropic_prompt(body: dict[str, Any]) -> Prompt:
    """Anthropic messages: the top-level `system` (string or blocks) counts as one message."""
    system = body.get("system")
    head = [content_text(system)] if system else []
    return _messages_prompt(head, body.get("messages"))


def _prompt_text(prompt: Any) -> str:
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and all(isinstance(token, int) for token in prompt):
        return " ".join(str(token) for token in prompt)  # a token array
    return ""


def completion_prompt(body: dict[str, Any]) -> Prompt:
    """Legacy completions: a prompt string, token array or list of those; each is a message."""
    prompt = body.get("prompt", "")
    if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int):
        texts = tuple(_prompt_text(item) for item in prompt)
    else:
        texts = (_prompt_text(prompt),)
    return Prompt(texts=texts, last_user=texts[-1] if texts else "")


def responses_prompt(body: dict[str, Any]) -> Prompt:
    """Responses API: `instructions` as one message, then `input` (a string or item list)."""
    instructions = body.get("instructions")
    head = [instructions] if isinstance(instructions, str) and instructions else []
    items = body.get("input")
    if isinstance(items, str):
        return Prompt(texts=(*head, items), last_user=items)
    if isinstance(items, list):
        items = [item for item in items if isinstance(item, dict) and "content" in item]
    return _messages_prompt(head, items)


def embedding_inputs(body: dict[str, Any]) -> list[str | list[int]]:
    """Embeddings: `input` as a string, a token array, or a list of either; [] if invalid."""
    value = body.get("input")
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not value:
        return []
    if all(isinstance(token, int) for token in value):
        return [list(value)]
    if not all(_is_input(item) for item in value):
        return []
    return [item if isinstance(item, str) else list(item) for item in value]


def _is_input(item: Any) -> bool:
    if isinstance(item, str):
        return True
    return isinstance(item, list) and all(isinstance(token, int) for token in item)
