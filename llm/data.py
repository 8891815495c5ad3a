"""Transitional: :mod:`llm.trainer` imports :class:`PromptSet` from here until it is split (see :mod:`llm.prompts`)."""

from llm.prompts.prompt_set import PromptSet

__all__ = ["PromptSet"]
