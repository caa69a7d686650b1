"""Fault modes: misdeployments and bugs seen in the field, injected on purpose.

A conformance check is proven only when it passes on the correct reference
server and fails on the fault it targets.  Adding a fault is one line in
FAULTS plus an `if faults.on("name")` where it bites.
"""
from __future__ import annotations

from typing import Iterable

FAULTS: dict[str, str] = {
    "no-reasoning-parser": "served without --reasoning-parser: <think>...</think> stays inside content, "
                           "no reasoning field",
    "no-tool-parser": "served without a tool parser: tool-call XML stays inside content, no tool_calls",
    "no-auto-tool-choice": "served without --enable-auto-tool-choice: tool_choice auto answers vLLM's 400",
    "untyped-tool-args": "tool-call argument values all come back as JSON strings, whatever the schema says",
    "small-window": "the engine's real window is 32768 while /v1/models and /tokenize report the profile's",
    "silent-truncation": "over-length prompts are accepted and silently cut from the left instead of a 400",
    "images-ignored": "images are neither counted in the prompt nor seen by the model",
    "only-first-image": "only the first image of a request reaches the processor; later ones are dropped silently",
    "image-tokens-unmerged": "the processor skips GLM-4V's 2x2 patch merge: four times the image tokens",
    "aspect-500": "an image with an aspect ratio over 200 crashes the processor: a 500 instead of a 400",
    "rgba-500": "an image with an alpha channel is not converted to RGB and crashes the request: a 500",
    "overflow-500": "a prompt over the window crashes the request with a 500 instead of vLLM's 400",
    "bad-image-500": "an undecodable image answers 500, after which the server hangs on every request",
    "box-tokens-leak": "grounding box markup leaks into the reasoning text and wraps answers that asked for no box",
    "box-tokens-stripped": "box tokens are skipped as special tokens, so grounding answers lose their box markup",
    "slow-first-token": "time to first token grows by 1500 ms",
    "api-key-ignored": "--api-key is accepted but never enforced",
    "file-anywhere": "file:// media is read from anywhere on disk, outside --allowed-local-media-path",
    "ssrf-open": "media URLs are fetched from any host, loopback included, ignoring --allowed-media-domains",
    # robustness and security suites
    "traceback-in-errors": "error answers carry the Python traceback: source paths and line numbers",
    "address-leak": "image decode errors keep PIL's '<_io.BytesIO object at 0x7f...>' heap address (CVE-2026-22778)",
    "engine-dead-after-bad-image": "an undecodable image kills the engine: /health stays 200, chats answer 500 "
                                   "(vLLM #39863)",
    "engine-hung": "the engine deadlocks: /health stays 200 while every chat request hangs without an answer "
                   "(vLLM #39863)",
    "hang-after-20": "the engine stops mid-run: the first 20 chat requests are answered, every later one hangs "
                     "without an answer while /health stays 200 (vLLM issue #39863: EngineCore stops under sustained "
                     "load while the API server keeps answering)",
    "streams-never-freed": "a stream whose client disconnects is never aborted: num_requests_running stays up",
    "n-unbounded": "no upper bound on n: the API server blocks for seconds fanning out copies, then fails "
                   "(CVE-2026-34756)",
    "video-frames-unbounded": "every frame of a video/jpeg data URL is decoded, thousands included (CVE-2026-34755)",
    "header-unbounded": "request lines and headers of any size are accepted (CVE-2025-48956)",
    "tool-schema-500": "a tool schema with a bad regex pattern or type crashes the request: 500 (CVE-2025-48944)",
    "validation-500": "request validation errors (bad JSON, non-object body, bad UTF-8, surrogates, logprobs range) "
                      "answer 500",
    "bomb-500": "no decompression-bomb check of its own: PIL's DecompressionBombError escapes as a 500",
    "no-image-limit": "more images than the per-prompt limit are accepted and loaded",
    "no-fetch-timeout": "media URLs are fetched without a timeout: a trickling host holds the request for as long "
                        "as it likes",
    "ssrf-redirect": "media fetches follow redirects from an allowed host to any host",
    "open-invocations": "/invocations serves chat without the API key, like vLLM's SageMaker route (vLLM #58144)",
    "sigterm-drops-requests": "SIGTERM ends the server at once: in-flight streams are cut mid-answer",
    "orphan-worker": "a worker process survives the server's SIGTERM and leaves a /dev/shm segment (what vllm#55510, "
                     "an issue, reports after a SIGKILL: EngineCore and TP workers survive and keep the GPUs)",
    "shm-leak": "SIGTERM ends every process of the server cleanly, but a /dev/shm segment it created stays behind, "
                "mapped by nobody",
    "n-blocks-loop": "a huge n is refused with vLLM's 400 in time, but validating it holds the API server's event "
                     "loop for 2 s: /health stalls meanwhile",
    "bomb-slow": "a decompression bomb is decoded in bounded strips before the pixel check: memory stays flat, but the "
                 "400 comes after ~6 s (the double waits in place of the decode)",
    "n-slow-refusal": "a huge n is refused with vLLM's 400, but only after 6 s (the fan-out is built before the bound "
                      "is checked)",
    "sigterm-ignored": "SIGTERM is ignored: the server keeps serving and never exits",
    "fetch-blocks-loop": "a media URL is fetched with a blocking client on the event loop: every other request waits "
                         "7 s, then the fetch fails with a 400",
    "odd-image-mute": "images in any mode but RGB (RGBA, CMYK, 16-bit, palette) are refused with a 400 whose message "
                      "is empty",
    "fetch-error-500": "a media fetch that times out or cannot connect escapes to the catch-all handler: 500 "
                       "InternalServerError with an empty message, as vLLM 0.32 answers (no 4xx naming the URL)",
    "body-unbounded": "no bound before tokenizing: a prompt of any length is tokenized in full before the window check "
                      "(vLLM 0.32 refuses text longer than the window x its longest token first); a 64 MiB body holds "
                      "the double's event loop for a minute",
    "stream-tool-args-broken": "streamed tool-call argument deltas resend what was already sent, so they do not "
                               "reassemble",
    "tool-calls-finish-stop": "a turn that called tools (auto or required) ends with finish_reason stop, "
                              "not tool_calls",
    "thinking-toggle-ignored": "chat_template_kwargs enable_thinking=false is ignored: the model thinks anyway",
    "history-reasoning-content-dropped": "an assistant turn sent back with `reasoning_content` (the legacy name) "
                                         "loses it before the template (vLLM #38488)",
    "tool-call-in-reasoning": "a tool call made right after thinking is swallowed into the reasoning text: "
                              "no tool_calls",
    "reasoning-streamed-as-content": "streamed answers carry the reasoning text as content deltas; non-streamed "
                                     "answers are right",
    "parallel-calls-collapsed": "parallel tool calls are collapsed to the first one, streaming and not",
    "forced-call-not-enforced": "tool_choice required or a named function is not enforced: the model answers in "
                                "plain text and no call comes back (vLLM 0.28.0 and 0.23.0 with glm45)",
    "stream-named-call-empty": "a streamed named tool_choice carries neither content nor tool_calls: the role chunk, "
                               "then only the finish chunk (non-streamed answers are right; seen on vLLM 0.32)",
    "stream-usage-dropped": "stream_options.include_usage is ignored: no usage chunk ends the stream, so clients "
                            "(and vllm bench serve's TPOT) have no token counts",
    "stream-usage-miscounted": "the streamed usage chunk's completion_tokens leaves out the last token: one short of "
                               "the non-streamed answer's for the same greedy request",
    "reasoning-field-legacy": "the server reports vLLM 0.32.0 but sends reasoning only as `reasoning_content`, the "
                              "only name releases before 0.11.1 sent: clients written for current vLLM read "
                              "`reasoning` and see none",
    "media-url-confusion": "the media allowlist looks for an allowed host anywhere in the URL's authority text, while "
                           "the fetcher parses it the WHATWG way ('\\' ends the authority, '#' starts the fragment, "
                           "the host follows '@'): backslash, '@' and '#' URLs reach any host (CVE-2026-24779)",
    "open-admin-endpoints": "/pause, /resume, /server_info and the profiler routes are served without the API key "
                            "(VLLM_SERVER_DEV_MODE / VLLM_TORCH_PROFILER_DIR on a public port)",
    "mode-500": "images in modes other than RGB, RGBA, L or LA (CMYK, 16-bit, palette/animated) are never converted "
                "to RGB and crash the processor: a 500",
    "tiny-500": "images under 28 px on a side are not upscaled first: the processor's ValueError escapes as a 500",
    "batch-poisoned": "images are decoded in shared batches: one undecodable image fails the whole batch, so "
                      "concurrent good requests answer 500",
    "bomb-decoded": "a decompression bomb is decoded before the pixel check (the double decodes 384 MiB of it) and "
                    "the pixels stay in the processor cache: a 400, but the server's memory grows",
    # context: the window and usage, each misreported one way
    "models-window-wrong": "/v1/models reports a max_model_len twice the launch's, while /tokenize and the engine "
                           "keep the launch's window",
    "tokenize-window-wrong": "/tokenize reports a max_model_len twice the launch's, while /v1/models and the engine "
                             "keep the launch's window",
    "overflow-413": "a prompt over the window is refused with vLLM's message but status 413, not 400",
    "overflow-message-vague": "a prompt over the window is refused with a 400 that says only 'Input validation "
                              "failed.': no context length, no token counts",
    "engine-dead-after-overflow": "refusing a request that does not fit the window (a 400) kills the engine: /health "
                                  "stays 200, every later chat answers 500",
    "usage-prompt-miscounted": "usage.prompt_tokens leaves out the generation prompt: one less than /tokenize counts "
                               "for the same messages",
    "max-tokens-ignored": "max_tokens is not enforced: every answer runs until the model stops, past max_tokens and "
                          "past the window",
    "usage-missing": "non-streamed answers carry `usage: null`",
    "usage-every-chunk": "with include_usage every streamed chunk carries the usage, not only the last one before "
                         "[DONE]",
    "usage-total-wrong": "usage.total_tokens counts the completion only (prompt left out), streamed and not",
    "usage-unasked": "every stream ends with a usage chunk, whether stream_options.include_usage asked for it or not",
    # tools
    "named-choice-wrong-tool": "a named tool_choice forces a call but not its name: the model calls the tool it "
                               "picks itself (a get_weather call where get_stock_price was named, as vLLM 0.28.0 "
                               "gave with trained tiny weights, issue 23's CPU matrix)",
    "named-call-finish-tool-calls": "a forced named call ends with finish_reason tool_calls, where vLLM and the "
                                    "OpenAI API say stop",
    "none-choice-ignored": "tool_choice none is treated as auto: the model calls tools and the parser returns them",
    "finish-tool-calls-without-calls": "every answer to a request that offered tools ends with finish_reason "
                                       "tool_calls, whether a call came back or not",
    "zero-arg-call-filled": "a named tool without parameters is forced with an open schema: its call comes back "
                            "with an argument the tool never declared ({\"query\": \"now\"})",
    "forced-call-args-dropped": "a named tool_choice forces the call's envelope but not its arguments: the call "
                                "comes back with {} whatever the tool's schema requires (set_label({}), as vLLM "
                                "0.31.0 gave with glm45 and a tool without strict: true)",
    "stream-call-header-repeated": "every streamed argument delta of a tool call repeats its id, type and name",
    "stream-tool-calls-finish-stop": "a streamed turn that called tools ends with finish_reason stop; the "
                                     "non-streamed answer says tool_calls",
    "parallel-false-ignored": "parallel_tool_calls false is ignored: every call the model makes comes back",
    "tool-always-first": "weights that learnt one habit: under tool_choice auto the model calls the first offered "
                         "tool, whatever the question",
    "auto-never-calls": "weights that never call under tool_choice auto (random weights on vLLM): every auto turn "
                        "is text, so the checks that compare calls have none to compare",
    "tool-results-dropped": "role tool messages are dropped before the template: the model never sees a tool's "
                            "result and calls the tool again",
    "tool-args-whitespace-squeezed": "the tool parser collapses whitespace runs inside string arguments and strips "
                                     "their ends (tabs and double spaces lost; vLLM 0.27.1 changed whitespace at "
                                     "an argument's ends, fixtures/known: vllm-glm-enum-trailing-space)",
    # multimodal
    "channels-bgr": "decoded images reach the model with red and blue swapped (BGR, as OpenCV loads them)",
    "images-reversed": "the images of a prompt reach the model in reverse order; their token counts are unchanged",
    "gif-last-frame": "an animated image is read by its last frame, not its first",
    "gif-every-frame": "every frame of an animated image is counted as image tokens: a 2-frame GIF costs twice a PNG",
    "images-downscaled": "the processor's pixel bound is a quarter of the model's (--mm-processor-kwargs size): large "
                         "images shrink, /tokenize agrees, images under the bound are untouched",
    "images-fixed-size": "every image is resized to one 336x336 square before the processor: tokens do not grow "
                         "with size",
    "tokenize-image-unmerged": "/tokenize counts images without GLM-4V's 2x2 patch merge (four times the tokens) "
                               "while the chat endpoint merges",
    "no-video-limit": "more videos than GLM-4V's per-prompt limit (1) are accepted and loaded",
    "videos-dropped": "video parts are dropped silently: never loaded, never counted",
    "http-media-refused": "every http(s) media URL is refused with a 400, allowed host or not (an empty "
                          "--allowed-media-domains)",
    "http-media-ignored": "http(s) image parts are dropped silently: never fetched, never counted, a 200 all the same",
    "file-media-refused": "file:// media are refused even inside --allowed-local-media-path (the file is tested for "
                          "being the allowed directory, not for lying under it)",
    "file-outside-500": "a file:// URL outside --allowed-local-media-path is refused with a 500, not a 400",
    "tiny-image-mute": "images under 28 px on a side are refused with a 400 whose message is empty",
    "boxes-in-pixels": "grounding boxes come in the image's pixels, not GLM's 0-1000 scale",
    # answers
    "finish-reason-missing": "non-streamed choices carry finish_reason null",
    "finish-reason-twice": "a stream sends its finish chunk twice",
    "stream-last-delta-lost": "a stream never sends its last text delta: the streamed text ends short of the "
                              "non-streamed answer's",
    "stream-no-done": "streams end without the `data: [DONE]` line",
    # reasoning
    "think-tags-kept": "the reasoning is split into its field, but non-streamed content keeps the whole raw text, "
                       "<think>...</think> included",
    "reasoning-copied-to-content": "non-streamed content repeats the reasoning text before the answer",
    "thinking-off-answer-lost": "with enable_thinking=false the non-streamed answer comes back with content null (the "
                                "parser takes the answer for unfinished reasoning, which thinking-off then hides)",
    "reasoning-tokens-always": "usage.completion_tokens_details.reasoning_tokens counts every completion token, "
                               "thinking on or off",
    "stream-reasoning-late": "a stream sends its last reasoning delta after the first content or tool-call delta",
    "tool-name-prefixed": "tool calls name the function `functions.NAME`, streamed and not",
    "tool-args-double-encoded": "non-streamed tool-call arguments are JSON-encoded twice: a JSON string holding the "
                                "object's text",
    "history-reasoning-refused": "an assistant turn sent back with `reasoning` or `reasoning_content` is refused "
                                 "with a 400 (extra fields forbidden)",
    "arithmetic-off-by-one": "degraded weights (a broken quantization): every sum, difference and product the model "
                             "answers is one too high",
    "attention-window-short": "the model attends only to the last quarter of a long prompt (a sliding attention "
                              "window applied to every layer): facts earlier in it are lost",
    # robustness, tools, slo
    "max-tokens-past-left-500": "a max_tokens over what the window leaves (but within the window) crashes the "
                                "request: 500, neither vLLM's clamp nor a 400",
    "nul-500": "a message holding a NUL character (\\u0000 in JSON, valid) crashes the request: 500",
    "long-video-500": "a video of more frames than the processor keeps (32) crashes the request: 500",
    "bad-image-500-when-busy": "an undecodable image answers 500 while other requests are running (a 400 when it "
                               "is alone)",
    "failed-media-skipped": "a media URL that cannot be fetched or decoded is left out silently: the request is "
                            "answered 200 without it",
    "int-enum-schema-500": "a tool schema holding an integer enum crashes the request: 500 (the grammar compiler "
                           "takes string enums only)",
    "metrics-success-doubled": "/metrics counts every finished request twice in vllm:request_success_total",
    "image-text-unread": "the model cannot read text in images (a vision tower mismatched to the weights): words "
                         "are never recognised, colours and shapes still are",
    "http-media-thumbnail": "images fetched by http(s) URL reach the processor at half their size (the fetcher "
                            "asks for a smaller rendition): fewer tokens than the same image as a data: URL",
    "stream-parallel-calls-collapsed": "streamed answers carry only the first of parallel tool calls; non-streamed "
                                       "answers carry all",
    "usage-prompt-zero": "usage.prompt_tokens is always 0 (usage filled by a layer that counts the completion only)",
    "video-decoded-then-cut": "every frame of a long video is decoded before the 32 kept are chosen: the prompt is "
                              "bounded, the time is not (the double waits 31 s in place of decoding)",
    "models-card-flaps": "/v1/models lists the served model in its first answer only; later answers list another "
                         "model (a second replica behind the same address serving something else)",
    "tokenize-capped": "/tokenize counts at most max_model_len tokens: a longer prompt's count stops at the window",
    "stream-length-as-stop": "a stream cut by max_tokens ends with finish_reason stop; the non-streamed answer says "
                             "length",
    "model-name-ignored": "the request's model name is not checked: a model the server does not serve is answered "
                          "by the one it does, with a 200",
}

SLOW_FIRST_TOKEN_MS = 1500.0
SMALL_WINDOW = 32768


class UnknownFault(ValueError):
    pass


def describe() -> str:
    width = max(map(len, FAULTS))
    return "\n".join(f"{name:<{width}}  {text}" for name, text in FAULTS.items())


class Faults:
    """The active set; `faults.on(name)` is how code asks, and a typo there fails loudly."""

    def __init__(self, names: Iterable[str] = ()) -> None:
        names = list(names)
        bad = [n for n in names if n not in FAULTS]
        if bad:
            raise UnknownFault(f"unknown fault {bad[0]!r}; valid faults: {', '.join(FAULTS)}")
        self.active = frozenset(names)

    def on(self, name: str) -> bool:
        if name not in FAULTS:
            raise KeyError(f"fault {name!r} is not registered in reference/faults.py")
        return name in self.active

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(sorted(self.active))

    def __bool__(self) -> bool:
        return bool(self.active)
