"""The update as a new user turn, framed by the model's own chat template (``injection_turn=user``).

The frame is read off the template by rendering a short conversation with marker strings, so it is
exactly what the template puts between an assistant message and the next assistant reply: the end of
the assistant turn, the user turn's header, and after the update its end and a new assistant header.
The engine tokenises the framed update on its own and appends the ids (never re-tokenising the
joined text), so the template's special turn tokens appear verbatim in the injected segment.
"""
from __future__ import annotations

_ASSISTANT_MARK = "KVINJECTASSISTANTTEXT"
_UPDATE_MARK = "KVINJECTUPDATETEXT"


def user_turn_frame(tokenizer, model_name: str) -> tuple[str, str]:
    """(before, after): the chat-template text around a user turn that follows the assistant's text."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            f"model arg injection_turn=user needs a chat template, and the tokenizer of {model_name} has none; "
            "use injection_turn=inline (the default) for base models"
        )
    conversation = [
        {"role": "user", "content": "question"},
        {"role": "assistant", "content": _ASSISTANT_MARK},
        {"role": "user", "content": _UPDATE_MARK},
    ]
    text = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
    if text.count(_ASSISTANT_MARK) != 1 or text.count(_UPDATE_MARK) != 1:
        raise ValueError(
            f"the chat template of {model_name} does not render an assistant message followed by a user turn "
            "verbatim, so the update cannot be framed as a user turn; use injection_turn=inline"
        )
    assistant_end = text.index(_ASSISTANT_MARK) + len(_ASSISTANT_MARK)
    update_at = text.index(_UPDATE_MARK)
    return text[assistant_end:update_at], text[update_at + len(_UPDATE_MARK):]
