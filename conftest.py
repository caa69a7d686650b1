# The project's own tests drive pytest in pytest (pytester); nothing else belongs here.
pytest_plugins = ["pytester"]
