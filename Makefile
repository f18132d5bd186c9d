.PHONY: install test test-gpu quality style quickstart benchmark

install:
	python -m pip install torch==2.13.0
	python -m pip install -e ".[dev]"

# The same command as in README.md and .ci/run.
test:
	HF_HUB_OFFLINE=1 python -m pytest -q tests

test-gpu:
	HF_HUB_OFFLINE=1 python -m pytest -q -m gpu tests

quality:
	ruff check nanochat_hf tests recipes benchmarks
	ruff format --check nanochat_hf tests recipes benchmarks

style:
	ruff check --fix nanochat_hf tests recipes benchmarks
	ruff format nanochat_hf tests recipes benchmarks

benchmark:
	python benchmarks/model_throughput.py --depth 4
