"""`nanochat-hf report RUN_DIR`: the report card of a training run (Markdown + PNG plots, in its model card)."""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "report",
        help="write a run's report card: model, data, compute, time, cost, bpb, CORE/ChatCORE vs nanochat, plots",
        description=(
            "Write report.md and report_{loss,val_bpb,mfu}.png into the run's final folder (or newest checkpoint, or "
            "RUN_DIR itself if it is a checkpoint), from trainer_state.json, run_settings.json and any eval*.json "
            "written by `nanochat-hf eval --output`, and embed the report in the folder's README.md model card."
        ),
    )
    parser.add_argument("run_dir", help="a training run's output_dir, its final/ folder, or a checkpoint-N folder")
    parser.add_argument(
        "--push-to-hub", metavar="REPO_ID", help="upload the card, report and plots to this model repo"
    )
    parser.add_argument("--token", help="Hugging Face token (default: the logged-in one)")
    parser.set_defaults(func=run)


def run(args) -> int:
    # Imported when the command runs, so that `nanochat-hf --help` and the other commands start fast.
    from nanochat_hf.eval.report import push_report, write_report

    path = write_report(args.run_dir)
    print(f"wrote {path} (and its plots; the report is in {path.parent / 'README.md'})")
    if args.push_to_hub:
        push_report(path.parent, args.push_to_hub, token=args.token)
        print(f"pushed the report card to {args.push_to_hub}")
    return 0
