"""``python -m fusionbench.leaderboard ARGS`` is ``fusionbench leaderboard ARGS``: one parser, one set of flags."""

import sys

from fusionbench.cli import main

if __name__ == "__main__":
    sys.argv = ["fusionbench", "leaderboard", *sys.argv[1:]]  # the recorded command is the equivalent one
    raise SystemExit(main())
