"""Start-up time of the command line: `nanochat-hf --help`, `nanochat-hf plan`, against `import torch`.

    python benchmarks/cli_startup.py
    python benchmarks/cli_startup.py --repeats 10

Each command runs in a fresh interpreter (`python -m nanochat_hf.cli ...`), alternating with the
baselines in the same rounds; prints the median wall seconds per command and its ratio to
`python -c "import torch, transformers"` (what every command paid before the package imported lazily).
"""

import argparse
import statistics
import subprocess
import sys
import time


COMMANDS = {
    "nanochat-hf --help": [sys.executable, "-m", "nanochat_hf.cli", "--help"],
    "nanochat-hf plan": [sys.executable, "-m", "nanochat_hf.cli", "plan", "--depth", "20", "--gpu", "rtx4070"],
    "nanochat-hf plan-finetune": [sys.executable, "-m", "nanochat_hf.cli", "plan-finetune", "--depth", "20"],
    "python (empty)": [sys.executable, "-c", "pass"],
    "import torch, transformers": [sys.executable, "-c", "import torch, transformers"],
}
BASELINE = "import torch, transformers"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="rounds; the median counts")
    args = parser.parse_args(argv)
    seconds = {name: [] for name in COMMANDS}
    for round_number in range(1, args.repeats + 1):
        for name, command in COMMANDS.items():
            start = time.perf_counter()
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            seconds[name].append(time.perf_counter() - start)
        print(f"round {round_number}/{args.repeats} done", flush=True)
    baseline = statistics.median(seconds[BASELINE])
    for name, values in seconds.items():
        median = statistics.median(values)
        print(f"  {name:<28} {median:6.2f} s   ({median / baseline:.2f}x of {BASELINE})")


if __name__ == "__main__":
    main()
