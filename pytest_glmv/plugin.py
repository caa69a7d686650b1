"""The pytest surface of pytest-glmv, and its only one: options, markers, fixtures, and hooks that each
make one call into the session object (pytest_glmv/session.py). Logic lives there and below."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generator, Iterator

import pytest

from .kit import evidence
from .lifecycle import config as cfg
from .lifecycle import rootdir
from .lifecycle.profiles import Profile
from .lifecycle.server import Server
from .lifecycle.target import Target
from .session import MARKERS, SESSION_KEY, GlmvSession, check_command_line, session_of
from .slo import selection
from .slo.spec import Spec, SpecError, scenario

if TYPE_CHECKING:
    import httpx
    import openai

    from .kit.media import MediaServer


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("glmv", "GLM-4V server conformance (pytest-glmv)")
    for opt in cfg.OPTIONS:
        default = "" if opt.default in (None, (), False) else f"default {opt.default}; "
        kw: dict[str, Any] = {"dest": "glmv_" + opt.name, "default": None,
                              "help": f"{opt.help} [{default}env {opt.env}; ini {opt.ini}]"}
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


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, args: list[str]) -> None:
    rootdir.repair(early_config, args)  # `--glmv-baseline PATH` read as a test path must not move the rootdir


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> int | None:
    return check_command_line(config)  # bad values end the run here, before anything starts


def pytest_configure(config: pytest.Config) -> None:
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")
    session = GlmvSession(config)
    config.stash[SESSION_KEY] = session
    config.add_cleanup(session.stop)
    # hooks that get no config (logreport, collectreport, deselected) reach the session through this object
    config.pluginmanager.register(_Reports(session), "glmv-reports")


class _Reports:
    def __init__(self, session: GlmvSession) -> None:
        self.session = session

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.session.report.collector.add(report)  # on the xdist controller, every worker's reports too

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        self.session.report.collector.add_collect_error(report)

    def pytest_deselected(self, items: list[pytest.Item]) -> None:
        self.session.report.deselected += len(items)


def pytest_report_header(config: pytest.Config) -> list[str]:
    return session_of(config).target.header_lines()


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    session_of(session.config).attach_early()


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> Generator[None, None, None]:
    session_of(config).modify_items(items)
    yield  # -m and -k select here
    session_of(config).trusted_behaviour_only(items)  # so a check the user's -m left out is never mentioned


def pytest_collection_finish(session: pytest.Session) -> None:
    session_of(session.config).collection_finished(session)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    session_of(item.config).test_starting(item)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    report = yield
    session_of(item.config).make_report(item, report, call)
    return report


def pytest_sessionfinish(session: pytest.Session, exitstatus: int | pytest.ExitCode) -> None:
    session_of(session.config).finish(session, int(exitstatus))


@pytest.hookimpl(trylast=True)  # last, next to pytest's short summary, where a reader looks for the verdict
def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    if SESSION_KEY in config.stash:
        session_of(config).terminal_summary(terminalreporter)


# -- fixtures -------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def glmv_settings(pytestconfig: pytest.Config) -> cfg.Settings:
    return session_of(pytestconfig).settings


@pytest.fixture(scope="session")
def glmv_target(pytestconfig: pytest.Config) -> Target:
    return session_of(pytestconfig).ensure_started()


@pytest.fixture(scope="session")
def glmv_server(glmv_target: Target) -> Server:
    assert glmv_target.server is not None
    return glmv_target.server


@pytest.fixture(scope="session")
def glmv_profile(glmv_target: Target) -> Profile:
    assert glmv_target.profile is not None
    return glmv_target.profile


@pytest.fixture(scope="session")
def glmv_media(glmv_target: Target) -> Iterator["MediaServer | None"]:
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
def glmv_client(glmv_server: Server, glmv_settings: cfg.Settings) -> Iterator["openai.OpenAI"]:
    import openai

    client = openai.OpenAI(base_url=glmv_server.base_url, api_key=glmv_server.api_key or "EMPTY", max_retries=0,
                           timeout=glmv_settings.request_timeout,
                           http_client=evidence.sdk_http_client(openai))
    yield client
    client.close()


@pytest.fixture
def glmv_async_client(glmv_server: Server, glmv_settings: cfg.Settings) -> "openai.AsyncOpenAI":
    # Not closed here: closing needs the test's event loop, and the client holds no process.
    import openai

    return openai.AsyncOpenAI(base_url=glmv_server.base_url, api_key=glmv_server.api_key or "EMPTY",
                              max_retries=0, timeout=glmv_settings.request_timeout,
                              http_client=evidence.sdk_http_client(openai, asynchronous=True))


def _raw_client(server: Server, settings: cfg.Settings) -> "httpx.Client":
    return evidence.http_client(server.root_url, server.api_key, settings.request_timeout)


@pytest.fixture
def glmv_http(glmv_server: Server, glmv_settings: cfg.Settings) -> Iterator["httpx.Client"]:
    """Raw HTTP at the server's root, for what the SDK lacks (/health, /tokenize, /metrics, /version)."""
    with _raw_client(glmv_server, glmv_settings) as c:
        yield c


@pytest.fixture(scope="session")
def glmv_http_shared(glmv_server: Server, glmv_settings: cfg.Settings) -> Iterator["httpx.Client"]:
    """The same, one for the session: for module-scoped fixtures that send a request once and share it."""
    with _raw_client(glmv_server, glmv_settings) as c:
        yield c


@pytest.fixture(scope="session")
def glmv_slo_spec(pytestconfig: pytest.Config) -> Spec:
    return session_of(pytestconfig).slo_spec


@pytest.fixture(scope="session")
def glmv_slo_runs(pytestconfig: pytest.Config) -> selection.Runs:
    return session_of(pytestconfig).slo_runs


@pytest.fixture
def glmv_slo(request: pytest.FixtureRequest, glmv_slo_runs: selection.Runs) -> selection.Check:
    """Run (once per distinct marker) the scenario the test's slo marker describes."""
    marker = request.node.get_closest_marker("slo")
    if marker is None or not marker.kwargs:
        raise pytest.UsageError(f"{request.node.nodeid}: glmv_slo needs @pytest.mark.slo(THRESHOLD=..., ...)")
    try:
        sc = scenario(request.node.name, dict(marker.kwargs), f"{request.node.nodeid} slo marker")
    except SpecError as e:
        raise pytest.UsageError(f"glmv: {e}") from None
    check = selection.Check(glmv_slo_runs.get(sc, request))
    for t in sc.thresholds:  # measured values as junit properties, as suites/test_slo.py records them
        request.node.user_properties.append((t.key, check.result.get(t.key)))
    return check
