"""Third-party start-up messages that do not concern the run at hand, kept off the console.

bitsandbytes is imported by peft, which transformers' `Trainer` and trl import whenever peft is installed,
so every training command (even `--dry-run`) imports it although only QLoRA and the 8-bit optimizer state
use it. On CPUs with AVX512-BF16 that import logs "Failed to load CPU gemm_4bit_forward from
kernels-community ..." (an optional faster 4-bit CPU kernel, used by nothing but 4-bit CPU inference).
The filter drops that one record; bitsandbytes' other messages pass. The records it dropped are kept in
`DROPPED` for whoever does use 4-bit layers on the CPU.
"""

import logging


BITSANDBYTES_CPU_LOGGER = "bitsandbytes.backends.cpu.ops"
UNUSED_KERNEL_MESSAGE = "Failed to load CPU gemm_4bit_forward from kernels-community"
DROPPED: list[str] = []


class _DropUnusedKernelWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if str(record.msg).startswith(UNUSED_KERNEL_MESSAGE):
            DROPPED.append(record.getMessage())
            return False
        return True


_FILTER = _DropUnusedKernelWarning()


def silence_unused_bitsandbytes_warning() -> None:
    """Install the filter (idempotent); must run before bitsandbytes is first imported to take effect."""
    logger = logging.getLogger(BITSANDBYTES_CPU_LOGGER)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
