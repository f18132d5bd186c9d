import pytest
import torch

from nanochat_hf.errors import UserInputError
from nanochat_hf.planning.gpus import (
    GIB,
    detect_gpu,
    get_gpu,
    known_gpu_keys,
    load_gpu_table,
    match_gpu_by_device_name,
    require_listed,
    resolve_gpu,
    unlisted_gpu,
)


# The GPUs issue 5 asks the planner to cover.
REQUIRED_KEYS = [
    "rtx4070",
    "rtx4070-laptop",
    "rtx4070-super",
    "rtx4060ti-16gb",
    "rtx4080",
    "rtx4090",
    "rtx3090",
    "rtx5090",
    "a100-80gb",
    "h100-sxm",
    "8xh100",
]


def test_table_covers_the_required_gpus_with_a_source_per_row():
    table = load_gpu_table()
    keys = [gpu.key for gpu in table]
    assert len(keys) == len(set(keys))
    assert set(REQUIRED_KEYS) <= set(keys)
    for gpu in table:
        assert gpu.source.strip(), gpu.key
        assert gpu.memory_gib > 0 and gpu.bf16_tflops > 0 and gpu.board_power_w > 0 and gpu.num_gpus >= 1


@pytest.mark.parametrize(
    "key, memory_gib, bf16, fp8, watts, cc",
    [
        # Dense BF16 with FP32 accumulate; the laptop's power is 115 W TGP + 25 W Dynamic Boost.
        ("rtx4070", 12, 58.3, 116.6, 200, (8, 9)),
        ("rtx4070-laptop", 8, 40.1, 80.2, 140, (8, 9)),
        ("rtx4070-super", 12, 71.0, 141.9, 220, (8, 9)),
        ("rtx4060ti-16gb", 16, 44.1, 88.3, 165, (8, 9)),
        ("rtx4080", 16, 97.5, 194.9, 320, (8, 9)),
        ("rtx4090", 24, 165.2, 330.3, 450, (8, 9)),
        ("rtx3090", 24, 71.0, None, 350, (8, 6)),
        ("rtx5090", 32, 209.5, 419.0, 575, (12, 0)),
        ("a100-80gb", 80, 312.0, None, 400, (8, 0)),
        ("h100-sxm", 80, 989.4, 1979.0, 700, (9, 0)),
    ],
)
def test_rows_carry_the_published_figures(key, memory_gib, bf16, fp8, watts, cc):
    gpu = get_gpu(key)
    assert (gpu.memory_gib, gpu.bf16_tflops, gpu.fp8_tflops, gpu.board_power_w, gpu.compute_capability) == (
        memory_gib,
        bf16,
        fp8,
        watts,
        cc,
    )
    assert gpu.peak_bf16_flops == bf16 * 1e12
    assert gpu.memory_bytes == memory_gib * GIB


@pytest.mark.parametrize(
    "key, tensor_cores, boost_ghz",
    # Ada/GA102: peak = tensor cores x boost clock x 128 dense BF16 FLOP/clock (FP32 accumulate).
    [
        ("rtx4070", 184, 2.475),
        ("rtx4070-super", 224, 2.475),
        ("rtx4060ti-16gb", 136, 2.535),
        ("rtx4070-laptop", 144, 2.175),
        ("rtx4090", 512, 2.52),
        ("rtx4080", 304, 2.505),
    ],
)
def test_derived_peaks_follow_the_tensor_core_rule(key, tensor_cores, boost_ghz):
    gpu = get_gpu(key)
    assert gpu.bf16_tflops == pytest.approx(tensor_cores * boost_ghz * 128 / 1000, abs=0.05)
    assert gpu.fp8_tflops == pytest.approx(2 * gpu.bf16_tflops, abs=0.15)  # GeForce Ada: FP8 = 2 x BF16


def test_node_row_multiplies_per_gpu_figures():
    node, single = get_gpu("8xh100"), get_gpu("h100-sxm")
    assert node.num_gpus == 8
    assert node.total_bf16_tflops == pytest.approx(8 * single.bf16_tflops)
    assert node.total_board_power_w == 8 * single.board_power_w == 5600  # 8 x 700 W


def test_fp8_support_and_host_link():
    assert get_gpu("rtx4070").supports_fp8 and get_gpu("h100-sxm").supports_fp8 and get_gpu("rtx5090").supports_fp8
    assert not get_gpu("rtx3090").supports_fp8 and not get_gpu("a100-80gb").supports_fp8
    # PCIe 4.0 x16 ~25 GB/s effective per direction; the 4060 Ti is an x8 card; 5.0 doubles.
    assert get_gpu("rtx4070").host_link_gbs == 25
    assert get_gpu("rtx4060ti-16gb").host_link_gbs == 12.5
    assert get_gpu("rtx5090").host_link_gbs == 50


@pytest.mark.parametrize("spelling", ["rtx4070", "RTX 4070", "rtx_4070", "NVIDIA GeForce RTX 4070"])
def test_get_gpu_accepts_keys_and_names_in_any_spelling(spelling):
    assert get_gpu(spelling).key == "rtx4070"


def test_unknown_gpu_lists_the_known_ones():
    with pytest.raises(UserInputError) as err:
        get_gpu("gtx 1080")
    message = str(err.value)
    assert "gtx 1080" in message
    for key in known_gpu_keys():
        assert key in message


@pytest.mark.parametrize(
    "device_name, memory_gib, expected",
    [
        ("NVIDIA GeForce RTX 4070", 11.99, "rtx4070"),
        ("NVIDIA GeForce RTX 4070 Laptop GPU", 8.0, "rtx4070-laptop"),
        ("NVIDIA GeForce RTX 4070 SUPER", 11.99, "rtx4070-super"),
        ("NVIDIA GeForce RTX 4070 Ti", 11.99, None),  # a different card, not in the table
        ("NVIDIA GeForce RTX 4060 Ti", 15.7, "rtx4060ti-16gb"),
        ("NVIDIA GeForce RTX 4060 Ti", 7.7, None),  # the 8 GB card has the same name
        ("NVIDIA GeForce RTX 4090", 23.6, "rtx4090"),
        ("NVIDIA A100-SXM4-80GB", 79.2, "a100-80gb"),
        ("NVIDIA A100-SXM4-40GB", 39.4, None),
        ("NVIDIA H100 80GB HBM3", 79.1, "h100-sxm"),  # never the 8-GPU node row
        ("NVIDIA H100 PCIe", 79.1, None),  # lower peak than SXM
        ("NVIDIA H200", 139.8, "h200-sxm"),
    ],
)
def test_match_gpu_by_device_name(device_name, memory_gib, expected):
    match = match_gpu_by_device_name(device_name, int(memory_gib * GIB))
    assert (match.key if match else None) == expected


def test_match_without_memory_uses_the_name_only():
    assert match_gpu_by_device_name("NVIDIA GeForce RTX 4060 Ti").key == "rtx4060ti-16gb"


def test_detect_gpu_agrees_with_the_device():
    detected = detect_gpu()
    if not torch.cuda.is_available():
        assert detected is None
    else:
        props = torch.cuda.get_device_properties(0)
        assert detected == match_gpu_by_device_name(props.name, props.total_memory)


# ---------------------------------------------------------------------------------------------------------
# resolve_gpu: the one answer to "which GPU is this run on"


def test_resolve_gpu_names_rows_and_refuses_unknown_keys():
    assert resolve_gpu("RTX 4070") is get_gpu("rtx4070")
    row = get_gpu("h100-sxm")
    assert resolve_gpu(row) is row
    with pytest.raises(UserInputError, match="unknown GPU 'rtx9090'; known GPUs: rtx4070"):
        resolve_gpu("rtx9090")


def test_resolve_gpu_without_a_name_is_the_detected_card():
    resolved = resolve_gpu()
    if not torch.cuda.is_available():
        assert resolved is None
        return
    props = torch.cuda.get_device_properties(0)
    listed = match_gpu_by_device_name(props.name, props.total_memory)
    if listed is not None:
        assert resolved == listed and resolved.listed
    else:  # a card the table does not list: its own name and memory, its speed unknown
        assert (resolved.name, resolved.listed, resolved.bf16_tflops) == (props.name, False, None)
        assert resolved.memory_bytes == pytest.approx(props.total_memory, abs=1)


def test_an_unlisted_card_has_memory_but_no_speed_figures():
    card = unlisted_gpu("NVIDIA GeForce RTX 4070 Ti", int(11.99 * GIB), (8, 9))
    assert not card.listed and card.memory_gib == pytest.approx(11.99)
    assert card.peak_bf16_flops is None and card.total_board_power_w is None and card.host_link_gbs is None
    assert card.supports_fp8
    with pytest.raises(UserInputError, match="RTX 4070 Ti' \\(12.0 GiB\\) is not in nanochat_hf/planning/gpus.csv"):
        require_listed(card, "time estimates")
    require_listed(get_gpu("rtx4070"), "time estimates")
