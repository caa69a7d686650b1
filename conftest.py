# The project's own tests drive pytest in pytest; pytester is enabled with `-p pytester` in pyproject's addopts
# rather than `pytest_plugins` here, because a run of the shipped suites from another directory (an explicit
# --glmv-* target) collects suites/ below this file, where pytest refuses a non-top-level pytest_plugins.
