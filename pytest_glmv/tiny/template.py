"""The tiny model's chat template: GLM-4.5V's prompt format, so vLLM renders the prompts a
real GLM-4.5V deployment would (and its glm45 parsers meet the markup they expect).

What it reproduces of GLM-4.5V's template:
- every prompt starts `[gMASK]<sop>`;
- tools go in a `<|system|>` block listing each tool as JSON inside `<tools>`, followed
  by the `<tool_call>name <arg_key>/<arg_value>` call format;
- tool results follow one `<|observation|>` per run of tool messages, each wrapped in
  `<tool_response>`;
- images and videos become `<|begin_of_image|><|image|><|end_of_image|>` and
  `<|begin_of_video|><|video|><|end_of_video|>` where they sit in the content;
- `enable_thinking=false` appends `/nothink` to user turns (unless already there) and
  opens the answer with an empty `<think></think>`; earlier assistant turns keep their
  reasoning only after the last user turn, like the original.
It is written for this project, not copied; only the rendered format is meant to match.
"""
from __future__ import annotations

CHAT_TEMPLATE = r"""[gMASK]<sop>
{%- if tools -%}
<|system|>
# Tools

You may call one or more functions to assist with the user query.

You are provided with function signatures within <tools></tools> XML tags:
<tools>
{% for tool in tools -%}
{{ tool | tojson(ensure_ascii=False) }}
{% endfor -%}
</tools>

For each function call, output the function name and arguments within the following XML format:
<tool_call>{function-name}
<arg_key>{arg-key-1}</arg_key>
<arg_value>{arg-value-1}</arg_value>
<arg_key>{arg-key-2}</arg_key>
<arg_value>{arg-value-2}</arg_value>
...
</tool_call>
{%- endif -%}
{%- macro text_of(content) -%}
{%- if content is string -%}{{ content }}
{%- elif content is iterable and content is not mapping -%}
{%- for part in content -%}
{%- if part is string -%}{{ part }}
{%- elif part is mapping and part.type == 'text' -%}{{ part.text }}
{%- elif part is mapping and (part.type in ('image', 'image_url') or 'image' in part) -%}
<|begin_of_image|><|image|><|end_of_image|>
{%- elif part is mapping and (part.type in ('video', 'video_url') or 'video' in part) -%}
<|begin_of_video|><|video|><|end_of_video|>
{%- endif -%}
{%- endfor -%}
{%- elif content is not none -%}{{ content }}
{%- endif -%}
{%- endmacro -%}
{%- set thinking_off = enable_thinking is defined and not enable_thinking -%}
{%- set ns = namespace(last_user=-1) -%}
{%- for m in messages -%}
{%- if m.role == 'user' -%}{%- set ns.last_user = loop.index0 -%}{%- endif -%}
{%- endfor -%}
{%- for m in messages -%}
{%- if m.role == 'system' -%}
{{ '<|system|>\n' + text_of(m.content) }}
{%- elif m.role == 'user' -%}
{%- set text = text_of(m.content) -%}
{{ '<|user|>\n' + text }}{{ '/nothink' if thinking_off and not text.endswith('/nothink') else '' }}
{%- elif m.role == 'assistant' -%}
{%- set text = text_of(m.content) -%}
{%- set reasoning = m.reasoning_content if m.reasoning_content is string
    else (m.reasoning if m.reasoning is string else '') -%}
{%- if not reasoning and '</think>' in text -%}
{%- set reasoning = (text.split('</think>') | first).split('<think>') | last -%}
{%- set text = text.split('</think>') | last -%}
{%- endif -%}
{%- set kept = reasoning.strip() if loop.index0 > ns.last_user else '' -%}
{{ '<|assistant|>\n<think>' + kept + '</think>' }}
{%- if text.strip() -%}{{ '\n' + text.strip() }}{%- endif -%}
{%- for call in (m.tool_calls or []) -%}
{%- set f = call.function if call.function is defined and call.function else call -%}
{{ '\n<tool_call>' + f.name }}
{%- if f.arguments is mapping -%}
{%- for k, v in f.arguments.items() -%}
{{ '\n<arg_key>' + k + '</arg_key>' }}
{{- '\n<arg_value>' + (v if v is string else (v | tojson(ensure_ascii=False))) + '</arg_value>' }}
{%- endfor -%}
{%- endif -%}
{{ '\n</tool_call>' }}
{%- endfor -%}
{%- elif m.role == 'tool' -%}
{%- if loop.first or messages[loop.index0 - 1].role != 'tool' -%}{{ '<|observation|>' }}{%- endif -%}
{{ '\n<tool_response>\n' + text_of(m.content) + '\n</tool_response>' }}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
{{ '<|assistant|>' + ('\n<think></think>' if thinking_off else '') }}
{%- endif -%}
"""
