"""Train nanochat's BPE tokenizer and save it as a Hugging Face tokenizer folder.

    python recipes/train_tokenizer.py --config recipes/configs/tokenizer_quickstart.yaml
    python recipes/train_tokenizer.py --config recipes/configs/tokenizer_fineweb_65k.yaml --max_chars 500000000

Any YAML key (nanochat_hf.tokenizer.TokenizerTrainingArguments) can be overridden with `--key value`.
The folder holds tokenizer.json, tokenizer_config.json, chat_template.jinja and token_bytes.pt; load
it with `AutoTokenizer.from_pretrained(output_dir)`.
"""

import logging
import sys

from trl import TrlParser

from nanochat_hf.errors import run_reporting_errors
from nanochat_hf.tokenizer import TokenizerTrainingArguments, train_tokenizer_from_source


def main(argv=None) -> int:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)

    def train():
        (args,) = TrlParser((TokenizerTrainingArguments,)).parse_args_and_config(argv)
        tokenizer = train_tokenizer_from_source(args)
        print(f"saved a {len(tokenizer)}-token tokenizer to {args.output_dir}")

    return run_reporting_errors(train, "train_tokenizer")


if __name__ == "__main__":
    sys.exit(main())
