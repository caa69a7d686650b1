"""vLLM's error answers: `{"error": {"message", "type", "param", "code"}}` and its texts."""
from __future__ import annotations

import json
from typing import Any

_TYPES = {400: "BadRequestError", 401: "UnauthorizedError", 404: "NotFoundError", 500: "InternalServerError"}


class ApiError(Exception):
    def __init__(self, message: str, status: int = 400, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.param = param

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": _TYPES.get(self.status, "BadRequestError"),
                          "param": self.param, "code": self.status}}

    def json(self) -> str:
        return json.dumps(self.body(), ensure_ascii=False, separators=(",", ":"))


def invalid(message: str, param: str, value: Any = None, *, show_value: bool = True) -> ApiError:
    """vLLM's VLLMValidationError: the parameter (and value) appended to the message."""
    suffix = f"parameter={param}" + (f", value={value}" if show_value and value is not None else "")
    return ApiError(f"{message} ({suffix})", 400, param)


def context_overflow(window: int, prompt_tokens: int) -> ApiError:
    # vLLM stops tokenizing at window + 1, hence "at least" and the capped value.
    seen = min(prompt_tokens, window + 1)
    return invalid(f"This model's maximum context length is {window} tokens. However, your prompt contains at "
                   f"least {seen} input tokens, which exceeds this limit even without any output tokens. Please "
                   f"reduce the length of the input prompt.", "input_tokens", seen)


def text_over_window(window: int, chars: int, max_chars: int) -> ApiError:
    """vLLM 0.32's check on the prompt's length in characters, before tokenizing (renderers/params.py)."""
    return invalid(f"This model's maximum context length is {window} tokens. However, your prompt contains {chars} "
                   f"characters (more than {max_chars} characters, which is the upper bound for {window} input "
                   f"tokens). Please reduce the length of the input prompt.", "input_text", chars)


def max_tokens_over_window(max_tokens: int, window: int) -> ApiError:
    return invalid(f"max_tokens={max_tokens} cannot be greater than max_model_len={window}. Please request "
                   f"fewer output tokens.", "max_tokens", max_tokens)


def unknown_model(name: Any, served: str) -> ApiError:
    return ApiError(f"The model `{name}` does not exist. Valid aliases: {served}.", 404, "model")


AUTO_TOOL_CHOICE = '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set'


def too_many(modality: str, limit: int) -> ApiError:
    return ApiError(f"At most {limit} {modality}(s) may be provided in one prompt.", 400, modality)
