"""Run the hypothesis picture checks' own examples through a trained tiny model in transformers, judged by the
checks' own assertions: does the model (not a server) pass each check?

    python -m pytest_glmv.tiny.train.check_inputs --model DIR [--json OUT]

A task's accuracy on fresh examples estimates how often a check's answers are right; a check's examples are not
fresh draws: hypothesis (derandomized) sends first the smallest example (the smallest red square in the top-left
corner, one square, the word CAT), every run. Seen on vLLM 0.32: weights at 97.9 % on the grounding task wrote a
five-number box for that first example, and transformers writes the same. This runs each check's examples as the
suite draws them (the check's strategies and settings, through hypothesis' inner_test hook), asks the model
greedily with the check's own messages and max_tokens, and hands the parsed answer back to the check's own code:
a check whose assertion fails on the model's answer is the model's miss, recorded for trust.py (ship
--check-inputs). Needs torch, transformers, pytest and hypothesis in one environment. The first example is the
one every run sends; the others are the check's own draws in this process (hypothesis mixes constants of the
loaded modules into its draws, so a pytest run draws others: measured, the count check's second example was
n=2, seed 41 in a bare process and n=5, seed 179 with torch loaded); the hypothesis version is recorded.
"""
from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import sys
import types
from pathlib import Path
from typing import Any

from ...documents import folder
from .. import trust

MODULE = "test_multimodal_behavior.py"


class _Answer:
    """What a check reads of an exchange: status, message, evidence()."""

    def __init__(self, message: dict[str, Any]) -> None:
        self.status, self.message = 200, message

    def evidence(self, *_: Any) -> str:
        return f"answer {json.dumps(self.message, ensure_ascii=False)[:300]}"


class _Model:
    """The check's `mm`: records each question, answers from `answers` (the model's, in order) when given."""

    thinking = "hybrid"

    def __init__(self, answers: list[dict[str, Any]] | None = None) -> None:
        self.asked: list[tuple[list[Any], int, bool]] = []
        self.answers = list(answers or [])

    def behave(self, messages: Any, thinking: bool = False, max_tokens: int = 96) -> _Answer:
        self.asked.append((list(messages), max_tokens, thinking))
        return _Answer(self.answers.pop(0) if self.answers else {"content": ""})


def _suite() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("glmv_check_inputs_suite", folder("suites") / MODULE)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def drawn(fn: Any) -> list[dict[str, Any]]:
    """The keyword arguments hypothesis hands the check, in order, as a run that passes them all would draw them."""
    seen: list[dict[str, Any]] = []
    inner = fn.hypothesis.inner_test
    fn.hypothesis.inner_test = lambda *a, **kw: seen.append({k: v for k, v in kw.items() if v is not None})
    try:
        fn(**{p: None for p in inspect.signature(fn).parameters})
    finally:
        fn.hypothesis.inner_test = inner
    return seen


def run_check(inner: Any, kwargs: dict[str, Any], mm: _Model) -> str | None:
    """The check's own code on one example: None when it passes, else its assertion's first line."""
    from ...lifecycle.config import Settings  # imports pytest: here, so its absence is main()'s one line

    settings = types.SimpleNamespace(iou_threshold=Settings.iou_threshold)  # --glmv-iou-threshold's default
    extra = {"glmv_settings": settings} if "glmv_settings" in inspect.signature(inner).parameters else {}
    try:
        inner(mm=mm, **kwargs, **extra)
    except AssertionError as e:
        return str(e).splitlines()[0] if str(e) else "assertion failed"
    return None


def measure(model_dir: str) -> dict[str, Any]:
    import hypothesis

    from .evaluate import generate, parse
    from .tasks import Example
    from .train import load

    model, processor = load(model_dir)
    mod = _suite()
    out: dict[str, Any] = {}
    for key in trust.ANSWERS:
        file, _, name = key.partition("::")
        if file != MODULE:
            continue
        fn = getattr(mod, name)
        inner = fn.hypothesis.inner_test
        examples = drawn(fn)
        misses = []
        for kwargs in examples:
            mm = _Model()
            run_check(inner, kwargs, mm)  # records the questions; its verdict on empty answers is not read
            asked = [Example("check", msgs, {"content": ""}, lambda _: True, thinking=think, max_tokens=mt)
                     for msgs, mt, think in mm.asked]
            answers = [parse(t, ex) for ex, t in zip(asked, generate(model, processor, asked), strict=True)]
            why = run_check(inner, kwargs, _Model(answers))
            if why is not None:
                misses.append({"example": repr(kwargs)[:200], "answers": [a.get("content") for a in answers],
                               "check_says": why[:300]})
        out[key] = {"examples": len(examples), "passed": len(examples) - len(misses), "misses": misses}
    return {"checks": out, "hypothesis": hypothesis.__version__, "model": model_dir}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pytest_glmv.tiny.train.check_inputs", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a trained model dir (transformers)")
    ap.add_argument("--json", help="also write the result here (ship --check-inputs reads it)")
    a = ap.parse_args(argv)
    if not (Path(a.model) / "config.json").is_file():
        ap.error(f"--model {a.model}: no config.json there (a training output or a shipped weights dir with its files)")
    try:
        result = measure(a.model)
    except ImportError as e:
        print(f"check_inputs needs torch, transformers, pytest and hypothesis in one environment: {e}",
              file=sys.stderr)
        return 2
    except (OSError, ValueError) as e:  # missing or mismatched weight files: transformers' own words, one line
        print(f"glmv: --model {a.model}: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}",
              file=sys.stderr)
        return 1
    for key, r in result["checks"].items():
        first = r["misses"][0] if r["misses"] else None
        print(f"{key}: {r['passed']}/{r['examples']} of its own examples pass on the model"
              + (f"; first miss {first['example']}: {first['check_says']}" if first else ""))
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
