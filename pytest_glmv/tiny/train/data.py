"""Examples rendered exactly as vLLM renders them, and batches made in DataLoader workers.

The prompt is the model's own chat template (tokenizer.apply_chat_template with the tools and the
`enable_thinking` kwarg the suites send, image parts as vLLM passes them: `{"type": "image"}`) run through
the model's own processor (Glm4vProcessor: image resize, patches, placeholder expansion). The answer is the
same template's rendering of the assistant turn after that prompt, ended by the token GLM ends it with
(`<|observation|>` after tool calls, else `<|user|>`, both EOS in the config), and it alone carries loss.
"""
from __future__ import annotations

import base64
import io
import random
from typing import Any, Iterator

from .dialogs import TASKS, WEIGHTS, needle
from .tasks import Example

IGNORE = -100


def images_of(messages: list[dict[str, Any]]) -> list[Any]:
    """The PIL images of a chat in order, decoded from their data URLs and made RGB as vLLM does."""
    from PIL import Image

    out = []
    for m in messages:
        for part in m.get("content") if isinstance(m.get("content"), list) else []:
            if part.get("type") == "image_url":
                raw = base64.b64decode(part["image_url"]["url"].split(",", 1)[1])
                out.append(Image.open(io.BytesIO(raw)).convert("RGB"))
    return out


def for_template(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages as vLLM hands them to the template: image parts become {"type": "image"}, tool-call
    arguments are mappings."""
    out = []
    for m in messages:
        m = dict(m)
        if isinstance(m.get("content"), list):
            m["content"] = [{"type": "image"} if p.get("type") == "image_url" else p for p in m["content"]]
        out.append(m)
    return out


def prompt_of(ex: Example, tok: Any) -> str:
    """The generation prompt vLLM renders for the example's request."""
    kwargs: dict[str, Any] = {} if ex.thinking else {"enable_thinking": False}
    return str(tok.apply_chat_template(for_template(ex.messages), tools=ex.tools, add_generation_prompt=True,
                                       tokenize=False, **kwargs))


def answer_of(ex: Example, tok: Any, prompt: str) -> str:
    """The template's rendering of the assistant turn after the prompt, with the token GLM ends it with."""
    kwargs: dict[str, Any] = {} if ex.thinking else {"enable_thinking": False}
    turn = {"role": "assistant", **{k: v for k, v in ex.target.items() if v is not None}}
    full = tok.apply_chat_template(for_template(ex.messages) + [turn], tools=ex.tools, add_generation_prompt=False,
                                   tokenize=False, **kwargs)
    if not full.startswith(prompt):
        raise ValueError(f"{ex.task}: the template's answer does not continue its generation prompt")
    return str(full[len(prompt):]) + ("<|observation|>" if ex.target.get("tool_calls") else "<|user|>")


def encode(ex: Example, processor: Any, with_answer: bool = True) -> dict[str, Any]:
    """input_ids (prompt, + answer) with labels on the answer only, and the processor's other outputs: the
    image tensors, and per-token ones (transformers 5.19's mm_token_type_ids) extended with 0 over the answer."""
    prompt = prompt_of(ex, processor.tokenizer)
    images = images_of(ex.messages)
    enc = processor(text=[prompt], images=images or None, return_tensors="pt")
    ids = enc["input_ids"][0].tolist()
    answer_ids = (processor.tokenizer(answer_of(ex, processor.tokenizer, prompt), add_special_tokens=False)
                  ["input_ids"] if with_answer else [])
    out: dict[str, Any] = {"input_ids": ids + answer_ids, "labels": [IGNORE] * len(ids) + answer_ids,
                           "per_token": {}, "media": {}}
    for key, value in enc.items():
        if key in ("input_ids", "attention_mask"):
            continue
        if value.dim() == 2 and value.shape == enc["input_ids"].shape:
            out["per_token"][key] = value[0].tolist() + [0] * len(answer_ids)
        elif images:
            out["media"][key] = value
    return out


def collate(items: list[dict[str, Any]], pad_id: int, left: bool = False) -> dict[str, Any]:
    import torch

    width = max(len(i["input_ids"]) for i in items)
    ids, labels, mask = [], [], []
    for i in items:
        gap = width - len(i["input_ids"])
        pad = ([pad_id] * gap, [IGNORE] * gap, [0] * gap)
        body = (i["input_ids"], i.get("labels", [IGNORE] * len(i["input_ids"])), [1] * len(i["input_ids"]))
        row = [p + b if left else b + p for p, b in zip(pad, body, strict=True)]
        ids.append(row[0])
        labels.append(row[1])
        mask.append(row[2])
    batch: dict[str, Any] = {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels),
                             "attention_mask": torch.tensor(mask)}
    for key in items[0]["per_token"]:
        rows = [i["per_token"][key] for i in items]
        batch[key] = torch.tensor([[0] * (width - len(r)) + r if left else r + [0] * (width - len(r)) for r in rows])
    for key in {k for i in items for k in i["media"]}:
        batch[key] = torch.cat([i["media"][key] for i in items if key in i["media"]])
    return batch


class Batches:
    """An endless stream of collated training batches; each DataLoader worker draws its own examples."""

    def __init__(self, model_dir: str, seed: int, batch: int, tasks: list[str], needle_sentences: int,
                 needle_share: float, weights: dict[str, float] | None = None) -> None:
        self.model_dir, self.seed, self.batch, self.tasks = model_dir, seed, batch, tasks
        self.weights = dict(WEIGHTS if weights is None else weights)
        self.needle_sentences, self.needle_share = needle_sentences, needle_share

    def __iter__(self) -> Iterator[dict[str, Any]]:
        import torch
        from transformers import AutoProcessor

        info = torch.utils.data.get_worker_info()
        worker = info.id if info is not None else 0
        if info is not None:
            torch.set_num_threads(1)  # one core per worker: W workers, W cores of processor work
        rng = random.Random(f"{self.seed}:{worker}")
        processor = AutoProcessor.from_pretrained(self.model_dir)
        pad = processor.tokenizer.convert_tokens_to_ids("<|endoftext|>")
        names = [t for t in self.tasks if t != "needle"]
        weights = [self.weights[t] for t in names]
        while True:
            if "needle" in self.tasks and rng.random() < self.needle_share:
                # long and text-only: a smaller batch of its own, so short tasks are not padded to its length
                exs = [needle(rng, self.needle_sentences) for _ in range(max(1, self.batch // 4))]
            else:
                exs = [TASKS[t](rng) for t in rng.choices(names, weights, k=self.batch)]
            yield collate([encode(e, processor) for e in exs], pad)
