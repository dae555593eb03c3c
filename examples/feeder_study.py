"""The LV feeder study: how many electrified homes a real LV feeder hosts under each control strategy.

A thin entry to ``feeder_twin.cli`` (also installed as the ``feeder-study`` command); ``--help`` lists the
commands, ``run --help`` and ``hosting --help`` their options. The reference results and the commands that
produced them: ``examples/feeder_study_results.md``.

    python examples/feeder_study.py run --days 1 --strategies uncontrolled tou
    python examples/feeder_study.py run --weeks winter summer --workers 2
    python examples/feeder_study.py hosting --days 1
"""

from __future__ import annotations

import sys

from feeder_twin.cli import main

if __name__ == "__main__":
    sys.exit(main())
