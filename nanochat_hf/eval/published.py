"""nanochat's published evaluation numbers, for the report card's comparison columns.

Only numbers nanochat itself published are here, each with where it comes from:

- generation 1, d20 "speedrun" (README of 2025-10-13, 8 x H100, 3 h 51 min for the whole pipeline): base
  CORE 0.2219, and the chat tables of the mid-trained, SFT and RL models (ChatCORE over five tasks - the
  SpellingBee task did not exist yet);
- generation 2 "time-to-GPT-2" leaderboard (2026, base CORE on 8 x H100, training-loop time): d24 and d26;
- GPT-2 (OpenAI, 2019) CORE as nanochat measured it: 124M 0.1139 ... 1.5B 0.2565, the "GPT-2 grade" line.

nanochat recorded no evaluation numbers for d32 (its README says only that d32 outperforms GPT-2).
"""

GPT2_CORE = {
    "GPT-2 (124M)": 0.1139,
    "GPT-2 Medium (355M)": 0.1849,
    "GPT-2 Large (774M)": 0.2146,
    "GPT-2 XL (1.5B)": 0.256525,
}

# depth -> list of published base-model results (CORE and, where given, val bpb)
PUBLISHED_CORE = {
    20: [{"name": "nanochat d20 (gen. 1, 2025-10 README)", "core": 0.2219}],
    24: [
        {"name": "nanochat d24 (gen. 2 leaderboard #1, 3.04 h)", "core": 0.2585, "val_bpb": 0.74833},
        {"name": "nanochat d24 (gen. 2 leaderboard #6, ClimbMix, 1.65 h)", "core": 0.2626, "val_bpb": 0.71800},
    ],
    26: [
        {"name": "nanochat d26 (gen. 2 leaderboard #2, fp8, 2.91 h)", "core": 0.2578, "val_bpb": 0.74504},
        {"name": "nanochat d26 (gen. 2 leaderboard #3, 1M batch, 2.76 h)", "core": 0.2602, "val_bpb": 0.74645},
    ],
}

# depth -> stage -> task -> accuracy (ChatCORE over the five tasks of the time)
PUBLISHED_CHAT = {
    20: {
        "MID": {
            "ARC-Easy": 0.3561,
            "ARC-Challenge": 0.2875,
            "MMLU": 0.3111,
            "GSM8K": 0.0250,
            "HumanEval": 0.0671,
            "ChatCORE": 0.0730,
        },
        "SFT": {
            "ARC-Easy": 0.3876,
            "ARC-Challenge": 0.2807,
            "MMLU": 0.3151,
            "GSM8K": 0.0455,
            "HumanEval": 0.0854,
            "ChatCORE": 0.0884,
        },
        "RL": {"GSM8K": 0.0758},
    }
}

NO_NUMBERS_NOTE = {32: "nanochat published no evaluation numbers for d32 (its README only says it outperforms GPT-2)."}
