"""`--glmv-baseline PATH` (a space, not `=`) must not move pytest's rootdir.

pytest finds its rootdir and ini file from the command line's paths *before* it loads plugins from entry
points (Config.parse: determine_setup, then load_setuptools_entrypoints). At that moment `--glmv-baseline`
is an unknown option, so the PATH after it reads as a test path: the rootdir became the report's folder and
the project's ini file (its addopts, testpaths, markers) was not read. pytest calls this a known limitation
(pytest-dev/pytest#8846, #13351; #14051 for pytest 9); the `=` form never had it.

The first hook an entry-point plugin gets is pytest_load_initial_conftests, before any conftest, test path
or session. There, with the glmv options known, the setup is determined again; if it differs, the
ini-dependent steps pytest already took are taken again with the right file: rootdir and ini, addopts (and
the plugins they name with -p), pythonpath, confcutdir. Where that cannot be done exactly (the wrong place
had an ini of its own, or a pytest whose internals differ) the run stops with one line asking for `=`.
"""
from __future__ import annotations

import os
from typing import Any

import pytest

from .config import OPTIONS

# Flags whose value may be given as the next argument: every option but the switches.
VALUED = frozenset(o.flag for o in OPTIONS if o.kind != "bool")


def _spaced(args: list[str]) -> list[str]:
    """The glmv flags given as `--flag VALUE` (two arguments), those whose value is an existing path first: only
    a path moves pytest's rootdir, so the one-line error names the flag that did it."""
    pairs = [(a, nxt) for a, nxt in zip(args, args[1:], strict=False) if a in VALUED and not nxt.startswith("-")]
    return [a for a, nxt in sorted(pairs, key=lambda pair: not os.path.exists(pair[1]))]


def repair(config: pytest.Config, args: list[str]) -> None:
    """Put rootdir and ini file where they are without the glmv options' values; `args` is pytest's own list."""
    spaced = _spaced(args)
    if not spaced:
        return
    from _pytest.config import findpaths

    parser = config._parser
    ns = parser.parse_known_args(list(args))  # the glmv options are known now: their values are no paths
    if getattr(ns, "inifilename", None) or getattr(ns, "rootdir", None):
        return  # an explicit -c / --rootdir decides, whatever the paths
    hint = f"write {spaced[0]}=VALUE (with `=`) instead of `{spaced[0]} VALUE`"
    try:
        found = findpaths.determine_setup(inifile=None, override_ini=ns.override_ini, args=ns.file_or_dir,
                                          rootdir_cmd_arg=None, invocation_dir=config.invocation_params.dir)
    except TypeError:  # a pytest whose determine_setup differs (pytest 8): say what works there
        if config.rootpath != config.invocation_params.dir and config.inipath is None:
            raise pytest.UsageError(f"glmv: pytest took the value of {spaced[0]} for a test path and moved its "
                                    f"rootdir to {config.rootpath}; {hint}") from None
        return
    rootpath, inipath, inicfg = found[0], found[1], found[2]
    if (rootpath, inipath) == (config.rootpath, config.inipath):
        return
    if config.inipath is not None or not hasattr(config, "_inicfg"):
        # Its addopts and pythonpath are applied already; undoing them is guesswork.
        raise pytest.UsageError(f"glmv: pytest took the value of {spaced[0]} for a test path and read the "
                                f"ini file {config.inipath} instead of {inipath or 'none'}; {hint}")
    _apply(config, args, ns, rootpath, inipath, inicfg, list(found[3]) if len(found) > 3 else [])


def _apply(config: Any, args: list[str], ns: Any, rootpath: Any, inipath: Any, inicfg: Any,
           ignored: list[str]) -> None:
    config._rootpath, config._inipath, config._inicfg = rootpath, inipath, inicfg
    if hasattr(config, "_ignored_config_files"):
        config._ignored_config_files = ignored
    config._inicache.clear()  # getini("addopts"), ("pythonpath"), ... were read from no file
    config._parser.extra_info.update(rootdir=str(rootpath), inifile=str(inipath))
    addopts = list(config.getini("addopts"))
    if addopts:
        args[:] = addopts + args  # the same list pytest parses for real after this hook
        config.pluginmanager.consider_preparse(addopts, exclude_only=False)  # e.g. `-p pytester`
    config._parser.parse_known_args(args, namespace=config.known_args_namespace)
    if ns.confcutdir is None:  # pytest set it from the wrong rootdir
        config.known_args_namespace.confcutdir = str(inipath.parent if inipath is not None else rootpath)
    if hasattr(config, "_configure_python_path"):
        config._configure_python_path()  # the ini's pythonpath entries (none were read from no file)
