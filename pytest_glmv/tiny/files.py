"""The files of a tiny GLM-4V model directory, as name -> bytes.

No weights are written here: vLLM either invents them (`--load-format dummy`, shapes from
config.json) or reads the trained ones of pytest_glmv.tiny.train, which builds its model
from this same config, so the two always agree. The sizes keep every code path of the real
architecture (MoE with a dense first layer and a shared expert, grouped-query attention,
partial multimodal RoPE, a vision tower with patch merging) and are the smallest measured
to learn every behaviour task (issue 25: hidden 128 x 2 layers reached 96 % on counting,
hidden 256 x 4 layers with a 2 x 128 vision tower 100 %); about 5 M parameters, 10 MB in bf16.
"""
from __future__ import annotations

from typing import Any

from . import template, tokenizer

ARCHS: dict[str, tuple[str, str]] = {
    # arch key -> (HF architecture, model_type)
    "moe": ("Glm4vMoeForConditionalGeneration", "glm4v_moe"),  # GLM-4.5V / GLM-4.6V
    "dense": ("Glm4vForConditionalGeneration", "glm4v"),  # GLM-4.1V-Thinking / GLM-4.6V-Flash
}

HIDDEN = 256
HEADS = 8
LAYERS = 4
HEAD_DIM = 32
PARTIAL_ROTARY = 0.5
# mRoPE splits the rotary frequencies between time, height and width. vLLM requires the
# sections to add up to the number of frequency pairs: head_dim * partial / 2 = 8.
MROPE_SECTION = [2, 3, 3]
assert sum(MROPE_SECTION) == int(HEAD_DIM * PARTIAL_ROTARY) // 2

# The image processor's resize bounds, in pixels: at most 448x448, i.e. 32x32 patches of
# 14 px merged 2x2 into <= 256 LLM tokens, which keeps image prompts cheap on a CPU.
MIN_PIXELS = 112 * 112
MAX_PIXELS = 448 * 448
# CLIP's normalisation, which GLM-4V's processor uses.
IMAGE_MEAN = [0.48145466, 0.4578275, 0.40821073]
IMAGE_STD = [0.26862954, 0.26130258, 0.27577711]


def _padded(n: int, multiple: int = 128) -> int:
    """Embedding rows: at least the tokenizer size, rounded up as real checkpoints do."""
    return -(-n // multiple) * multiple


def config(arch: str, ids: dict[str, int], vocab_size: int) -> dict[str, Any]:
    hf_arch, model_type = ARCHS[arch]
    eos = [ids["<|endoftext|>"], ids["<|user|>"], ids["<|observation|>"]]
    rope = {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": PARTIAL_ROTARY,
            "mrope_section": MROPE_SECTION}
    text: dict[str, Any] = {
        "model_type": f"{model_type}_text",
        "vocab_size": vocab_size,
        "hidden_size": HIDDEN,
        "intermediate_size": 2 * HIDDEN,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": 2,
        "head_dim": HEAD_DIM,
        "hidden_act": "silu",
        "attention_bias": True,
        "max_position_embeddings": 65536,
        "partial_rotary_factor": PARTIAL_ROTARY,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        # Both spellings: transformers 5 reads rope_parameters, older readers rope_scaling.
        "rope_parameters": rope,
        "rope_scaling": {"rope_type": "default", "mrope_section": MROPE_SECTION},
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "pad_token_id": ids["<|endoftext|>"],
        "eos_token_id": eos,
        "image_token_id": None,
        "video_token_id": None,
    }
    if arch == "moe":
        # Layer 0 dense, the others MoE: 4 routed experts (top-2) and 1 shared expert,
        # so both layer kinds and the shared-expert path are exercised.
        text.update({
            "moe_intermediate_size": HIDDEN // 2, "first_k_dense_replace": 1, "n_routed_experts": 4,
            "n_shared_experts": 1, "num_experts_per_tok": 2, "n_group": 1, "topk_group": 1,
            "norm_topk_prob": True, "routed_scaling_factor": 1.0, "use_qk_norm": False,
        })
    vision = {
        "model_type": f"{model_type}_vision",
        "depth": 2,
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_heads": 4,
        "out_hidden_size": HIDDEN,
        "patch_size": 14,
        "temporal_patch_size": 2,
        "spatial_merge_size": 2,
        "image_size": 336,
        "in_channels": 3,
        "hidden_act": "silu",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "rms_norm_eps": 1e-5,
        "initializer_range": 0.02,
    }
    return {
        "architectures": [hf_arch],
        "model_type": model_type,
        "text_config": text,
        "vision_config": vision,
        "image_start_token_id": ids["<|begin_of_image|>"],
        "image_end_token_id": ids["<|end_of_image|>"],
        "video_start_token_id": ids["<|begin_of_video|>"],
        "video_end_token_id": ids["<|end_of_video|>"],
        "image_token_id": ids["<|image|>"],
        "video_token_id": ids["<|video|>"],
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "transformers_version": "5.19.0",
    }


def _processor_common() -> dict[str, Any]:
    return {
        "processor_class": "Glm4vProcessor",
        "do_resize": True, "do_rescale": True, "do_normalize": True, "do_convert_rgb": True,
        "rescale_factor": 1 / 255,
        "image_mean": IMAGE_MEAN, "image_std": IMAGE_STD,
        "patch_size": 14, "temporal_patch_size": 2, "merge_size": 2,
    }


def files(arch: str = "moe") -> tuple[dict[str, bytes], dict[str, int]]:
    """Every file of the model directory, and the GLM token ids (also in token_ids.json)."""
    if arch not in ARCHS:
        raise ValueError(f"unknown tiny architecture {arch!r}; valid: {', '.join(ARCHS)}")
    tok, ids = tokenizer.build()
    n_tokens = len(tok["model"]["vocab"]) + len(tok["added_tokens"])
    eos = [ids["<|endoftext|>"], ids["<|user|>"], ids["<|observation|>"]]
    generation = {"_from_model_config": True, "do_sample": True, "eos_token_id": eos,
                  "pad_token_id": ids["<|endoftext|>"], "temperature": 1.0, "top_p": 1.0}
    image = {**_processor_common(), "image_processor_type": "Glm4vImageProcessor",
             "size": {"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS}}
    video = {**_processor_common(), "video_processor_type": "Glm4vVideoProcessor",
             "size": {"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS * 2},
             "max_image_size": {"longest_edge": MAX_PIXELS * 2},
             "fps": 2, "do_sample_frames": True, "max_duration": 8}
    dump = tokenizer.dumps
    out = {
        "config.json": dump(config(arch, ids, _padded(n_tokens))),
        "generation_config.json": dump(generation),
        "tokenizer.json": dump(tok),
        "tokenizer_config.json": dump(tokenizer.tokenizer_config(ids)),
        "special_tokens_map.json": dump({"eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}),
        "chat_template.jinja": template.CHAT_TEMPLATE.encode("utf-8"),
        "preprocessor_config.json": dump(image),
        "video_preprocessor_config.json": dump(video),
        "processor_config.json": dump({"processor_class": "Glm4vProcessor"}),
        "token_ids.json": dump(ids),
    }
    return out, ids
