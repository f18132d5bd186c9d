"""`ProcessorChain`: several logits processors applied by one object, their signatures checked once.

`LogitsProcessorList` (what `generate()` runs every step) looks up each processor's call signature with
`inspect.signature` at every step, to pass extra keyword arguments to those that take them. `generate()`
passes none, so a processor whose `__call__` takes more than `(input_ids, scores)` cannot run there anyway.
The chain checks this once, when it is built, and then calls its processors in order: the same scores,
one signature look-up per step instead of one per processor.
"""

import inspect

from transformers import LogitsProcessor, LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper

from ..errors import UserInputError


def _takes_only_ids_and_scores(processor) -> bool:
    try:
        parameters = inspect.signature(processor.__call__).parameters
    except (TypeError, ValueError):  # no signature to read (a builtin): refused as well
        return False
    return len(parameters) == 2


def _flatten(processors) -> list:
    flat = []
    for processor in processors:
        if isinstance(processor, ProcessorChain):
            flat.extend(processor.processors)
        elif isinstance(processor, LogitsProcessorList):
            flat.extend(_flatten(processor))
        else:
            flat.append(processor)
    return flat


def is_transformers_processor(processor) -> bool:
    """A processor class of transformers itself: `generate()` may build one of the same type from its
    config and then uses the caller's instead, so such processors stay in the plain list."""
    return type(processor).__module__.startswith("transformers.")


class ProcessorChain(LogitsProcessor):
    """Applies `processors` in order (a `LogitsProcessorList` or chain inside is flattened).

    Raises `UserInputError` naming `logits_processor` for a processor that is not callable as
    `processor(input_ids, scores)`.
    """

    def __init__(self, processors):
        flat = _flatten(processors)
        for processor in flat:
            if not callable(processor) or not _takes_only_ids_and_scores(processor):
                raise UserInputError(
                    f"logits_processor: {type(processor).__name__} cannot be chained; a logits processor must be "
                    "callable as processor(input_ids, scores) (generate() passes no other arguments)"
                )
        self.processors = tuple(flat)

    def __call__(self, input_ids, scores):
        for processor in self.processors:
            scores = processor(input_ids, scores)
        return scores


def chain_processors(processors) -> list:
    """`processors` as one `ProcessorChain` (in a list, for `generate()`), or unchanged (flattened) when there
    are none or one of them is transformers' own (see `is_transformers_processor`)."""
    flat = _flatten(processors)
    if not flat or any(is_transformers_processor(processor) for processor in flat):
        return list(flat)
    return [ProcessorChain(flat)]


def sampling_warpers(temperature: float, top_k: int | None) -> list:
    """The temperature and top-k warpers `generate()` would build (transformers' own classes, in its order:
    none for temperature 1.0, none for top-k 0 or None), for a chain to hold in their place."""
    warpers = [] if temperature == 1.0 else [TemperatureLogitsWarper(temperature)]
    return warpers + ([TopKLogitsWarper(top_k)] if top_k else [])
