"""Random ids in vLLM's shapes: chatcmpl-<16 hex>, chatcmpl-tool-<16 hex>, modelperm-<16 hex>."""
from __future__ import annotations

import secrets


def completion_id() -> str:
    return f"chatcmpl-{secrets.token_hex(8)}"


def tool_call_id() -> str:
    return f"chatcmpl-tool-{secrets.token_hex(8)}"


def perm_id() -> str:
    return f"modelperm-{secrets.token_hex(8)}"
