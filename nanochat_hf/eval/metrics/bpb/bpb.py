"""Bits per byte as an `evaluate` metric: summed cross-entropy over summed target bytes, in bits.

Load it from this package, offline: `evaluate.load(nanochat_hf.eval.metric_path("bpb"))`.
"""

import datasets
import evaluate

from nanochat_hf.callbacks.val_bpb import bits_per_byte


_DESCRIPTION = """\
Bits per byte (bpb): sum of the cross-entropy in nats / (ln 2 x sum of the UTF-8 byte lengths of the target
tokens), over every target that is not a special token. Unlike the mean loss it does not depend on the
tokenizer, so models with different vocabularies compare. Add the sums of each batch (or document) with
`add_batch`; the metric divides once, which is what makes it exact over uneven pieces. `bpb_sums` in
`nanochat_hf.callbacks.val_bpb` computes the two sums of a batch for a model.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of float): summed cross-entropy in nats of each piece of text.
    references (list of int): summed byte lengths of the same pieces' target tokens.
Returns:
    bpb (float): inf when there are no bytes; nats (float); bytes (int).
Examples:
    >>> bpb = evaluate.load(nanochat_hf.eval.metric_path("bpb"))
    >>> round(bpb.compute(predictions=[6.931471805599453, 0.0], references=[5, 5])["bpb"], 6)
    1.0
"""

_CITATION = ""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Bpb(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("float64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references):
        nats, num_bytes = float(sum(predictions)), int(sum(references))
        return {"bpb": bits_per_byte(nats, num_bytes), "nats": nats, "bytes": num_bytes}
