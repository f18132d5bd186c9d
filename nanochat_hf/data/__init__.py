"""Pretraining data: text sources (`sources`) and packed, resumable training rows (`pretrain`)."""

from .pretrain import (
    DATA_STATE_FILENAME,
    LanePosition,
    PretrainDataset,
    build_pretrain_datasets,
    build_train_dataloader,
    consumed_rows,
    default_num_lanes,
    load_data_state,
    save_data_state,
)
from .sources import DEFAULT_HUB_DATASET, EMBEDDED, TextSource, open_text_source


__all__ = [
    "DATA_STATE_FILENAME",
    "DEFAULT_HUB_DATASET",
    "EMBEDDED",
    "LanePosition",
    "PretrainDataset",
    "TextSource",
    "build_pretrain_datasets",
    "build_train_dataloader",
    "consumed_rows",
    "default_num_lanes",
    "load_data_state",
    "open_text_source",
    "save_data_state",
]
