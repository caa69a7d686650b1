"""Typed keys of the aiohttp application's shared state."""
from __future__ import annotations

from aiohttp import web

from .metrics import Metrics
from .settings import ReferenceSettings
from .trace import Tracer

CFG = web.AppKey("cfg", ReferenceSettings)
METRICS = web.AppKey("metrics", Metrics)
TRACER = web.AppKey("tracer", Tracer)

class State:
    """Mutable after startup (aiohttp freezes the app's own mapping)."""

    # bad-image-500 sets it; from then on the server never answers.
    wedged: bool = False
    # engine-dead-after-bad-image sets it; /health stays 200 while every chat fails.
    engine_dead: bool = False
    models_answered: bool = False  # models-card-flaps: /v1/models answered once already


STATE = web.AppKey("state", State)
