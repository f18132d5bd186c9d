"""Pretraining data: text sources (`sources`) and packed, resumable training rows (`pretrain`, `lanes`)."""

from .pretrain import (
    DATA_STATE_FILENAME,
    DEFAULT_PACKING,
    PACKINGS,
    LanePosition,
    PretrainDataset,
    build_pretrain_datasets,
    build_train_dataloader,
    consumed_rows,
    default_num_lanes,
    load_data_state,
    save_data_state,
)
from .sources import (
    CLIMBMIX_HUB_DATASET,
    DATASET_BY_GENERATION,
    DEFAULT_HUB_DATASET,
    EMBEDDED,
    TextSource,
    open_text_source,
)


__all__ = [
    "CLIMBMIX_HUB_DATASET",
    "DATASET_BY_GENERATION",
    "DATA_STATE_FILENAME",
    "DEFAULT_HUB_DATASET",
    "DEFAULT_PACKING",
    "EMBEDDED",
    "PACKINGS",
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
