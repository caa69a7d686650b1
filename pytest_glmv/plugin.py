"""pytest entry point: options, markers, fixtures and report hooks. Logic lives elsewhere."""
from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generator, Iterator

import pytest

from .lifecycle import config as cfg
from .lifecycle.server import ServerError
from .lifecycle.target import Target, is_launched

if TYPE_CHECKING:
    import httpx
    import openai

AREAS = {
    "multimodal": "images and video reach the model through every route a client uses",
    "tools": "function calling through the glm45 tool parser",
    "reasoning": "hybrid thinking through the glm45 reasoning parser",
    "context": "the context window, exactly",
    "slo": "latency and throughput SLOs, measured like vllm bench serve (run only when selected)",
    "robustness": "bad requests never take the server down",
    "security": "keys, media fetching and file access",
}
MARKERS = {**AREAS, "behavior": "needs real weights (a random-weight model answers nonsense)"}
FIXTURES = {"glmv_target", "glmv_server", "glmv_profile", "glmv_client", "glmv_async_client", "glmv_http",
            "glmv_media", "glmv_media_dir", "glmv_http_shared"}
# pytest.exit code when the target cannot be started or reached mid-run
EXIT_SERVER = 3

# SLO selection, fixtures and result blocks live in their own plugin module.
pytest_plugins = ("pytest_glmv.slo.plugin", "pytest_glmv.report.plugin")  # report: matrix, json/html, baseline

SETTINGS_KEY = pytest.StashKey[cfg.Settings]()
TARGET_KEY = pytest.StashKey[Target]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("glmv", "GLM-4V server conformance (pytest-glmv)")
    for opt in cfg.OPTIONS:
        kw: dict[str, Any] = {"dest": "glmv_" + opt.name, "default": None,
                              "help": f"{opt.help} [env {opt.env}; ini {opt.ini}]"}
        if opt.kind == "bool":
            kw.update(action="store_const", const="true")
        elif opt.kind == "list":
            kw.update(action="append", metavar=opt.metavar)
        elif opt.kind == "choice":
            kw.update(metavar="{" + ",".join(opt.choices) + "}")
        else:
            kw.update(metavar=opt.metavar or opt.name.split("_")[-1].upper())
        group.addoption(opt.flag, **kw)
        parser.addini(opt.ini, opt.help, type="args" if opt.kind == "list" else "string", default=None)


def settings_of(config: pytest.Config) -> cfg.Settings:
    if SETTINGS_KEY not in config.stash:
        def ini(name: str) -> Any:
            return config.getini("glmv_" + name)

        config.stash[SETTINGS_KEY] = cfg.resolve(lambda n: config.getoption("glmv_" + n), ini)
    return config.stash[SETTINGS_KEY]


def suites_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("pytest_glmv.suites")
    if spec and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(__file__).resolve().parent.parent / "suites"


def _xdist_active(config: pytest.Config) -> bool:
    if hasattr(config, "workerinput"):
        return True
    n = config.getoption("numprocesses", None)
    return (bool(n) and n != 0) or config.getoption("dist", "no") not in ("no", None)


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> int | None:
    settings = settings_of(config)  # bad values end the run here, before anything starts
    if settings.target == "vllm":
        try:
            plan, _ = Target(settings).vllm_plan()  # an unknown model without a profile ends here
        except ServerError as e:
            raise pytest.UsageError(str(e)) from None
        if settings.print_command:
            print(shlex.join(plan.argv))
            return 0
    if settings.target == "vllm" and _xdist_active(config):
        raise pytest.UsageError(
            "glmv: -n/--dist with --glmv-model would start one vLLM per worker on the same GPUs; launch it once "
            "and use --glmv-base-url with -n, or drop -n")
    return None


def pytest_configure(config: pytest.Config) -> None:
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")
    settings = settings_of(config)
    target = Target(settings, progress=lambda msg: _say(config, msg))
    config.stash[TARGET_KEY] = target
    config.add_cleanup(lambda: _stop(target))
    # An explicit target with no paths given means "judge it": run the shipped suites.
    if settings.explicit_target and config.args_source != pytest.Config.ArgsSource.ARGS:
        config.args = [str(suites_dir())]


def _say(config: pytest.Config, msg: str) -> None:
    tr = config.pluginmanager.get_plugin("terminalreporter")
    if tr is not None:
        tr.write_line(msg)
    else:
        print(msg, file=sys.stderr, flush=True)


def _stop(target: Target) -> None:
    try:
        target.stop()
    except ServerError as e:
        print(str(e), file=sys.stderr)


def pytest_report_header(config: pytest.Config) -> list[str]:
    return config.stash[TARGET_KEY].header_lines()


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    target = session.config.stash[TARGET_KEY]
    if target.kind == "external" and target.settings.explicit_target:
        try:
            target.start()
        except ServerError as e:
            raise pytest.UsageError(str(e).splitlines()[0]) from None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    root = suites_dir().resolve()
    for item in items:
        if root not in Path(str(item.path)).resolve().parents:
            continue
        areas = sorted({m.name for m in item.iter_markers() if m.name in AREAS})
        if len(areas) != 1:
            raise pytest.UsageError(f"{item.nodeid}: a suite check carries exactly one area marker "
                                    f"({', '.join(AREAS)}); it has {areas or 'none'}")


def pytest_collection_finish(session: pytest.Session) -> None:
    if session.config.option.collectonly:
        return
    if any(FIXTURES & set(getattr(item, "fixturenames", ())) for item in session.items):
        _ensure_started(session.config)


def _ensure_started(config: pytest.Config) -> Target:
    target = config.stash[TARGET_KEY]
    fresh = not target.started
    try:
        target.start()
    except ServerError as e:
        pytest.exit(str(e), returncode=EXIT_SERVER)
    if fresh:
        for line in target.describe_lines():
            _say(config, f"glmv: {line}")
    return target


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    report = yield
    if report.failed:
        target = item.config.stash.get(TARGET_KEY, None)
        if target is not None and is_launched(target.server):
            assert target.server is not None
            report.sections.append(("glmv server log (last 40 lines)", target.server.log_tail(40)))
    return report


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    target = config.stash.get(TARGET_KEY, None)
    if target is not None and target.started:
        terminalreporter.section("glmv target")
        for line in target.describe_lines():
            terminalreporter.write_line(line)


# -- fixtures -------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def glmv_settings(pytestconfig: pytest.Config) -> cfg.Settings:
    return settings_of(pytestconfig)


@pytest.fixture(scope="session")
def glmv_target(pytestconfig: pytest.Config) -> Target:
    return _ensure_started(pytestconfig)


@pytest.fixture(scope="session")
def glmv_server(glmv_target: Target) -> Any:
    return glmv_target.server


@pytest.fixture(scope="session")
def glmv_profile(glmv_target: Target) -> Any:
    return glmv_target.profile


@pytest.fixture(scope="session")
def glmv_media(glmv_target: Target) -> Iterator[Any]:
    """A loopback media server (None when the server is remote and no --glmv-media-host was given)."""
    from .kit.media import MediaServer

    s = glmv_target.settings
    if glmv_target.is_local:
        server = MediaServer("127.0.0.1")
    elif s.media_host:
        server = MediaServer("0.0.0.0", public_host=s.media_host)
    else:
        yield None
        return
    with server:
        yield server


@pytest.fixture(scope="session")
def glmv_media_dir(glmv_target: Target) -> Any:
    """A directory the server may read file:// media from (None for a server the plugin did not start)."""
    return glmv_target.media_dir


@pytest.fixture
def glmv_client(glmv_server: Any, glmv_settings: cfg.Settings) -> Iterator["openai.OpenAI"]:
    import openai

    client = openai.OpenAI(base_url=glmv_server.base_url, api_key=glmv_server.api_key or "EMPTY", max_retries=0,
                           timeout=glmv_settings.request_timeout)
    yield client
    client.close()


@pytest.fixture
def glmv_async_client(glmv_server: Any, glmv_settings: cfg.Settings) -> "openai.AsyncOpenAI":
    # Not closed here: closing needs the test's event loop, and the client holds no process.
    import openai

    return openai.AsyncOpenAI(base_url=glmv_server.base_url, api_key=glmv_server.api_key or "EMPTY",
                              max_retries=0, timeout=glmv_settings.request_timeout)


def _raw_client(server: Any, settings: cfg.Settings) -> "httpx.Client":
    import httpx

    headers = {"Authorization": f"Bearer {server.api_key}"} if server.api_key else {}
    return httpx.Client(base_url=server.root_url, headers=headers, timeout=settings.request_timeout)


@pytest.fixture
def glmv_http(glmv_server: Any, glmv_settings: cfg.Settings) -> Iterator["httpx.Client"]:
    """Raw HTTP at the server's root, for what the SDK lacks (/health, /tokenize, /metrics, /version)."""
    with _raw_client(glmv_server, glmv_settings) as c:
        yield c


@pytest.fixture(scope="session")
def glmv_http_shared(glmv_server: Any, glmv_settings: cfg.Settings) -> Iterator["httpx.Client"]:
    """The same, one for the session: for module-scoped fixtures that send a request once and share it."""
    with _raw_client(glmv_server, glmv_settings) as c:
        yield c
