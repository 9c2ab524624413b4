"""The model backend that PARLEY_LLM_BACKEND names: tgi (default), openai or local.

Backends are imported on demand, so a process that never uses the local model never imports
llama-cpp-python.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llm.base import ChatModel
    from parley.settings import Settings


def create_model(settings: Settings) -> ChatModel:
    """A new, unconnected backend; nothing is contacted or loaded until it is used."""
    if settings.llm_backend == "openai":
        from llm.openai_compat import OpenAIChatModel

        return OpenAIChatModel.from_settings(settings)
    if settings.llm_backend == "local":
        from llm.local import LocalChatModel

        return LocalChatModel.from_settings(settings)
    from llm.tgi import TGIChatModel

    return TGIChatModel.from_settings(settings)


def describe_backend(settings: Settings) -> str:
    """Where answers come from, for operators' messages: "TGI at http://...", ..."""
    if settings.llm_backend == "openai":
        return f"the OpenAI-compatible server at {settings.openai_url}"
    if settings.llm_backend == "local":
        path = settings.local_model_path or "the packaged Gemma 3 270M"
        return f"the local model ({path})"
    return f"TGI at {settings.tgi_url}"
