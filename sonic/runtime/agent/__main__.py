"""``python -m sonic.runtime.agent ...``: the entry point (see :mod:`sonic.runtime.agent.main`)."""

from sonic.runtime.agent.main import main

if __name__ == "__main__":
    main()
