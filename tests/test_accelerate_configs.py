"""The shipped accelerate configs, read by accelerate's own launcher parsing (`accelerate launch` flags
merged with the config file), as a cluster node would launch them."""

from pathlib import Path

import pytest
from accelerate.commands.launch import _validate_launch_command, launch_command_parser

from nanochat_hf import modeling_nanochat_hf


CONFIGS = Path(__file__).resolve().parent.parent / "accelerate_configs"


def launch_args(config, *flags):
    parsed = launch_command_parser().parse_args(["--config_file", str(CONFIGS / config), *flags, "train.py"])
    args, defaults, _ = _validate_launch_command(parsed)
    return args, defaults


@pytest.mark.parametrize("config", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_every_config_is_read_by_accelerate(config):
    args, defaults = launch_args(config)
    assert args.num_processes >= 1 and args.num_processes % args.num_machines == 0
    if defaults.distributed_type == "FSDP":
        assert defaults.fsdp_config["fsdp_version"] == 2  # FSDP1 flattens parameters: no Muon
        # accelerate wraps the modules whose class has this name: it must be the model's block class.
        block = defaults.fsdp_config["fsdp_transformer_layer_cls_to_wrap"]
        assert getattr(modeling_nanochat_hf, block).__name__ == block


@pytest.mark.parametrize("config", ["multi_node_2x8.yaml", "multi_node_2x8_fsdp2.yaml"])
def test_multi_node_configs_take_the_cluster_values(config):
    # What a node runs: its rank and the rendezvous host from the scheduler's environment.
    args, defaults = launch_args(config, "--machine_rank", "1", "--main_process_ip", "10.1.2.3")
    assert (args.num_machines, args.num_processes) == (2, 16)  # 8 processes per node
    assert args.rdzv_backend == "static" and args.main_process_port == 29500
    assert (args.machine_rank, args.main_process_ip) == (1, "10.1.2.3")
    assert defaults.machine_rank == 0  # the file's value, replaced by the flag on each node
