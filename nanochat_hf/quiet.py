"""Third-party start-up messages that do not concern the run at hand, kept off the console.

Each is logged when a library is *imported*, about an optional kernel nothing here uses:

- bitsandbytes is imported by peft, which transformers' `Trainer` and trl import whenever peft is installed,
  so every training command (even `--dry-run`) imports it although only QLoRA and the 8-bit optimizer state
  use it. On CPUs with AVX512-BF16 that import logs "Failed to load CPU gemm_4bit_forward from
  kernels-community ..." (an optional faster 4-bit CPU kernel, used by nothing but 4-bit CPU inference).
- torchao (the `fp8` extra) is imported by transformers' `PreTrainedModel` whenever it is installed. Its
  import logs "Failed to load .../torchao/_C_*.so" for each compiled kernel library its wheel was not built
  for (MX formats, CUTLASS for sm_90a; on a CPU, all of them), and torch logs two deprecation notices about
  torchao registering its Enum types with `torch.compile`. FP8 training uses neither: its matmuls are
  `torch._scaled_mm`.

The filter drops exactly those records; the libraries' other messages pass. Dropped records are kept in
`DROPPED` for whoever needs them.
"""

import logging


BITSANDBYTES_CPU_LOGGER = "bitsandbytes.backends.cpu.ops"
UNUSED_KERNEL_MESSAGE = "Failed to load CPU gemm_4bit_forward from kernels-community"
TORCHAO_LOGGER = "torchao"
TORCHAO_KERNEL_MESSAGE = "Failed to load "  # followed by the path of one of torchao's own _C_*.so files
PYTREE_LOGGER = "torch.utils._pytree"
PYTREE_ENUM_NOTICE = "is an Enum subclass and is now natively supported by torch.compile"
DROPPED: list[str] = []


def _is_unused_kernel_notice(logger_name: str, record: logging.LogRecord) -> bool:
    text = str(record.msg)
    if logger_name == BITSANDBYTES_CPU_LOGGER:
        return text.startswith(UNUSED_KERNEL_MESSAGE)
    if logger_name == TORCHAO_LOGGER:
        return text.startswith(TORCHAO_KERNEL_MESSAGE) and "torchao" in text and "_C_" in text
    return PYTREE_ENUM_NOTICE in text


class _DropUnusedKernelNotices(logging.Filter):
    def __init__(self, logger_name: str):
        super().__init__()
        self.logger_name = logger_name

    def filter(self, record: logging.LogRecord) -> bool:
        if _is_unused_kernel_notice(self.logger_name, record):
            DROPPED.append(record.getMessage())
            return False
        return True


_FILTERS = {name: _DropUnusedKernelNotices(name) for name in (BITSANDBYTES_CPU_LOGGER, TORCHAO_LOGGER, PYTREE_LOGGER)}


def silence_unused_kernel_notices() -> None:
    """Install the filters (idempotent); must run before those libraries are first imported to take effect."""
    for name, dropper in _FILTERS.items():
        logger = logging.getLogger(name)
        if dropper not in logger.filters:
            logger.addFilter(dropper)
