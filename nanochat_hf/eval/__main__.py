"""`python -m nanochat_hf.eval MODEL ...` and `accelerate launch -m nanochat_hf.eval MODEL ...`.

The arguments of `nanochat-hf eval`; under `accelerate launch` (or `torchrun`) every process evaluates its
share of the examples and the main process prints the results.
"""

import argparse
import sys

from nanochat_hf.commands.eval import add_arguments, run
from nanochat_hf.errors import run_reporting_errors


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nanochat_hf.eval", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run_reporting_errors(lambda: run(args), "nanochat_hf.eval")


if __name__ == "__main__":
    sys.exit(main())
