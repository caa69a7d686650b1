"""Greedy accuracy per task on fresh examples: under transformers (a model dir) or through a server's chat API.

    python -m pytest_glmv.tiny.train.evaluate --model DIR [--n 48] [--seed 1]
    python -m pytest_glmv.tiny.train.evaluate --server http://127.0.0.1:8000 --served-name tiny-glm45v

Under transformers the generated text is split as vLLM's glm45 parsers split it (reference/parsers.py, held
against vLLM 0.32 by tests/vllm/test_differential.py); through a server, the answer is the server's own
message. Either way each task's judge reads it as the suite's check does. Exit 1 with one line per task
below its threshold.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ...reference import parsers
from .data import collate, encode
from .dialogs import TASKS, THRESHOLDS, needle
from .tasks import Example, Message


def examples(seed: int, n: int, tasks: list[str], needle_sentences: int) -> dict[str, list[Example]]:
    """n fresh examples per task from their own seed (training draws from f"{seed}:{worker}" streams)."""
    out = {}
    for t in tasks:
        rng = random.Random(f"eval:{seed}:{t}")
        out[t] = [needle(rng, needle_sentences) if t == "needle" else TASKS[t](rng) for _ in range(n)]
    return out


def parse(text: str, ex: Example) -> Message:
    """A generated text as the server's message: reasoning, content, tool_calls."""
    mode = parsers.Mode(reasoning=ex.thinking, tools=ex.tools)
    got = parsers.parse(text.lstrip() if ex.thinking else text, mode)
    calls = [{"id": f"call_{i}", "type": "function", "function": {"name": n, "arguments": a}}
             for i, (n, a) in enumerate(got.calls)]
    return {"content": got.content, "reasoning": got.reasoning, "tool_calls": calls}


def generate(model: Any, processor: Any, exs: list[Example], batch: int = 16) -> list[str]:
    """Greedy continuations, batched with left padding (what vLLM's greedy decoding would produce)."""
    import torch

    tok = processor.tokenizer
    pad = tok.convert_tokens_to_ids("<|endoftext|>")
    eos = [tok.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|user|>", "<|observation|>")]
    device = next(model.parameters()).device
    texts = []
    for i in range(0, len(exs), batch):
        chunk = exs[i:i + batch]
        b = collate([encode(ex, processor, with_answer=False) for ex in chunk], pad, left=True)
        b.pop("labels")
        b = {k: v.to(device) for k, v in b.items()}
        with torch.no_grad():
            out = model.generate(**b, max_new_tokens=max(e.max_tokens for e in chunk), do_sample=False,
                                 eos_token_id=eos, pad_token_id=pad)
        for row in out[:, b["input_ids"].shape[1]:]:
            ids = row.tolist()
            cut = next((j for j, t in enumerate(ids) if t in eos), len(ids))
            texts.append(tok.decode(ids[:cut], skip_special_tokens=True))
    return texts


def score_model(model: Any, processor: Any, sets: dict[str, list[Example]]) -> dict[str, dict[str, Any]]:
    model.eval()
    result = {}
    for task, exs in sets.items():
        texts = generate(model, processor, exs, batch=8 if task == "needle" else 48)
        ok = [ex.judge(parse(t, ex)) for ex, t in zip(exs, texts, strict=True)]
        miss = next((t for t, good in zip(texts, ok, strict=True) if not good), None)
        result[task] = {"accuracy": sum(ok) / len(ok), "n": len(ok), "first_miss": miss and miss[:160]}
    return result


def ask_server(url: str, model: str, ex: Example, timeout: float = 120.0) -> Message:
    body: dict[str, Any] = {"model": model, "messages": _wire(ex.messages), "max_tokens": ex.max_tokens,
                            "temperature": 0, "seed": 0}
    if ex.tools:
        body.update(tools=ex.tools, tool_choice=ex.tool_choice)
    if not ex.thinking:
        body["chat_template_kwargs"] = {"enable_thinking": False}
    req = urllib.request.Request(url.rstrip("/") + "/v1/chat/completions", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return dict(json.load(r)["choices"][0]["message"])
    except urllib.error.HTTPError as e:
        return {"content": None, "error": f"{e.code} {e.read()[:200]!r}"}


def _wire(messages: list[Message]) -> list[Message]:
    """As a client sends them: tool-call arguments as JSON strings."""
    out = []
    for m in messages:
        if m.get("tool_calls"):
            m = {**m, "tool_calls": [{**c, "function": {**c["function"],
                                                        "arguments": json.dumps(c["function"]["arguments"])}}
                                     for c in m["tool_calls"]]}
        out.append(m)
    return out


def score_server(url: str, model: str, sets: dict[str, list[Example]], workers: int = 2) -> dict[str, dict[str, Any]]:
    result = {}
    with ThreadPoolExecutor(workers) as pool:
        for task, exs in sets.items():
            msgs = list(pool.map(lambda e: ask_server(url, model, e), exs))
            ok = [ex.judge(m) for ex, m in zip(exs, msgs, strict=True)]
            # the message's non-empty fields only, so a cut first miss still shows the calls and their arguments
            miss = next((json.dumps({k: v for k, v in m.items() if v}, ensure_ascii=False)[:300]
                         for m, good in zip(msgs, ok, strict=True) if not good), None)
            result[task] = {"accuracy": sum(ok) / len(ok), "n": len(ok), "first_miss": miss and miss[:160]}
    return result


def failures(result: dict[str, dict[str, Any]]) -> list[str]:
    return [f"task {t}: greedy accuracy {r['accuracy']:.0%} < threshold {THRESHOLDS[t]:.0%} (n={r['n']}); "
            f"first miss: {r['first_miss']!r}" for t, r in result.items() if r["accuracy"] < THRESHOLDS[t]]


def table(result: dict[str, dict[str, Any]]) -> str:
    return "\n".join(f"{t:14s} {r['accuracy']:6.1%}  (n={r['n']}, threshold {THRESHOLDS[t]:.0%})"
                     for t, r in result.items())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pytest_glmv.tiny.train.evaluate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--model", help="a trained model dir (transformers)")
    where.add_argument("--server", help="an OpenAI-compatible server's root URL, e.g. http://127.0.0.1:8000")
    ap.add_argument("--served-name", default="tiny-glm45v")
    ap.add_argument("--n", type=int, default=48)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--needle-sentences", type=int, default=60)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", help="also write the result here")
    a = ap.parse_args(argv)
    tasks = [t for t in a.tasks.split(",") if t]
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        print(f"unknown task(s) {', '.join(unknown)}; valid: {', '.join(TASKS)}", file=sys.stderr)
        return 2
    sets = examples(a.seed, a.n, tasks, a.needle_sentences)
    if a.server:
        result = score_server(a.server, a.served_name, sets)
    else:
        from .train import load
        model, processor = load(a.model, a.device)
        result = score_model(model, processor, sets)
    return report(result, a.json)


def report(result: Any, json_path: str | None) -> int:
    """Print the per-task table (and write it as JSON when asked); exit status 1 when a task missed."""
    print(table(result))
    if json_path:
        with open(json_path, "w") as f:
            json.dump(result, f, indent=1, ensure_ascii=False)
    bad = failures(result)
    for line in bad:
        print(line, file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())


