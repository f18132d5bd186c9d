"""Everything that predicts a training run without running it; imports neither torch nor transformers.

- `flops`: parameter tensors, counts and FLOPs per token of a model shape.
- `horizon`: the batch split (gradient accumulation) and the run's length, `Horizon`.
- `gpus` (+ `gpus.csv`): the GPU table and `resolve_gpu`, the one answer to "which GPU is this".
- `memory_modes`: `MemoryKnobs` (the one list of memory knobs) and the named modes.
- `memory`: the byte model (static state, activations, logits, overheads) and `plan_memory`.
- `choice`: `choose_mode`, the memory decision a real run asks for.
- `time_energy`: days, kWh and cost at an MFU point.
- `plan`: `make_plan`, everything above for one model on one GPU.
- `report`: plans as text, and the generated `docs/can_i_train_d32.md`.
- `finetune`: GPU memory of full / LoRA / QLoRA chat fine-tuning, from the same byte model.
"""
