"""Benchmark: RL rollout generation, tunelab's decoder against TRL GRPOTrainer's default generation.

    .venv/bin/python bench/rl_rollout.py --out bench/results/rl_rollout.json

One GRPOTrainer (TRL 1.16) is built on the policy — the quickstart SFT run's merged model when it exists (else the
built-in model) with a fresh LoRA adapter (r=16, all linear layers), as `stage: grpo` trains it — and the same
tokenised prompts (quickstart training orders, each repeated num_generations times, as GRPO's sampler repeats them)
are sampled by:

- `trl_default`: GRPOTrainer's own `_generate_single_turn` with its defaults on a CPU: `model.generate()` on the
  left-padded batch with the trainer's generation config (sampling, temperature 1, top_p 1, max_completion_length),
  under the trainer's mixed precision (TRL's default is bf16; `--bf16 auto` keeps it where bf16 matmuls are fast, as
  tunelab does, and turns it off elsewhere for both).
- `tunelab`: the same method as tunelab's grpo stage replaces it (train/online.py → model/decode.py): each prompt
  prefilled once for its G samples, finished rows leave the batch, float32 weights pre-packed for the rollout with
  the LoRA adapter merged in (train/rollout.py; model/fused_decoder.py on Llama-family models, else
  model/fast_linear.py).

Interleaved, `--repeats` times, medians. Reported: generated tokens per second (each path's own completions, EOS
included, counted as TRL counts completion lengths), seconds per rollout batch, and the ratio. Then a few real GRPO
steps with each whole path — TRL's as it ships; tunelab's with its rollouts and its training pass (each prompt once
for its G completions, train/shared_prompt.py) — for the seconds per step and the share of a step that is
generation.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_throughput import cpu_line  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
QUICKSTART_RUN = REPO / "runs" / "quickstart" / "merged"


def prompts(count: int) -> list[list[dict[str, str]]]:
    lines = (REPO / "examples" / "quickstart" / "train.jsonl").read_text(encoding="utf-8").splitlines()[:count]
    return [json.loads(line)["messages"][:-1] for line in lines]


def build_trainer(args, out: Path, tunelab_rollouts: bool):
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from trl import GRPOConfig, GRPOTrainer

    from tunelab.model.load import load_model
    from tunelab.train.online import with_tunelab_rollouts
    from tunelab.train.packing import use_packed_attention
    from tunelab.train.rollout import RolloutTiming
    from tunelab.train.shared_prompt import share_online_prompts

    torch.manual_seed(args.seed)
    model, tokenizer, _ = load_model(args.model)
    if tunelab_rollouts:
        use_packed_attention(model)  # as `stage: grpo` does: the training pass computes each prompt once
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    config = GRPOConfig(
        output_dir=str(out), use_cpu=True, bf16=args.bf16, report_to="none", save_strategy="no", logging_steps=1,
        num_generations=args.generations, per_device_train_batch_size=args.prompts * args.generations,
        max_completion_length=args.max_tokens, learning_rate=1e-5, max_steps=args.steps, seed=args.seed,
        gradient_checkpointing=False, activation_checkpointing=False,
    )  # fmt: skip
    dataset = Dataset.from_list([{"prompt": p} for p in prompts(args.prompts * max(args.steps, 1))])
    trainer_class = with_tunelab_rollouts(GRPOTrainer, returns_logprobs=True) if tunelab_rollouts else GRPOTrainer
    trainer = trainer_class(model=model, reward_funcs=[length_reward], args=config, train_dataset=dataset,
                            processing_class=tokenizer)  # fmt: skip
    trainer.rollout_timing = RolloutTiming()
    if tunelab_rollouts:
        share_online_prompts(trainer)
    return trainer


def length_reward(completions, **kwargs) -> list[float]:
    return [float(len(str(c))) for c in completions]


def tokenised(trainer, count: int, generations: int) -> list[list[int]]:
    repeated = [p for p in prompts(count) for _ in range(generations)]
    return trainer._tokenize_prompts(repeated)[0]


def time_generation(trainer, prompt_ids, path: str, generations: int) -> dict[str, float]:
    from tunelab.train.rollout import trainer_rollout

    trainer.model.eval()
    started = time.perf_counter()
    if path == "tunelab":
        completion_ids, _ = trainer_rollout(trainer, prompt_ids, trainer.rollout_timing)
    else:
        completion_ids, _ = type(trainer)._generate_single_turn(trainer, prompt_ids, None, {}, generations)
    seconds = time.perf_counter() - started
    tokens = sum(len(ids) for ids in completion_ids)
    return {"seconds": seconds, "tokens": tokens, "tokens_per_second": tokens / seconds}


def generation_share(args, out: Path, tunelab_rollouts: bool) -> dict[str, float]:
    """A few real GRPO steps: total time, and how much of it was spent generating."""
    trainer = build_trainer(args, out, tunelab_rollouts)
    spent = {"seconds": 0.0}
    original = trainer._generate_single_turn

    def timed(*call_args, **call_kwargs):
        started = time.perf_counter()
        try:
            return original(*call_args, **call_kwargs)
        finally:
            spent["seconds"] += time.perf_counter() - started

    trainer._generate_single_turn = timed
    started = time.perf_counter()
    trainer.train()
    total = time.perf_counter() - started
    return {"step_seconds": total / args.steps, "generation_share": spent["seconds"] / total}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(QUICKSTART_RUN) if QUICKSTART_RUN.is_dir() else "smollm2-135m-instruct")
    parser.add_argument("--prompts", type=int, default=4, help="distinct prompts per rollout batch")
    parser.add_argument("--generations", type=int, default=8, help="samples per prompt (GRPO's num_generations)")
    parser.add_argument("--max-tokens", type=int, default=72)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3, help="GRPO steps for the generation share (0: skip)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--bf16",
        choices=["auto", "on", "off"],
        default="auto",
        help="both trainers' mixed precision (auto: on where bf16 is fast, as tunelab picks)",
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    from tunelab.hardware import bf16_is_fast

    args.bf16 = {"on": True, "off": False}.get(args.bf16, bf16_is_fast())

    import torch

    from tunelab.hardware import physical_cores

    torch.set_num_threads(args.threads or physical_cores())
    with tempfile.TemporaryDirectory() as scratch:
        trainer = build_trainer(args, Path(scratch), tunelab_rollouts=False)
        prompt_ids = tokenised(trainer, args.prompts, args.generations)
        time_generation(trainer, prompt_ids[: args.generations], "tunelab", args.generations)  # warm-up, both paths
        time_generation(trainer, prompt_ids[: args.generations], "trl_default", args.generations)
        runs: dict[str, list[dict[str, float]]] = {"trl_default": [], "tunelab": []}
        for _ in range(args.repeats):
            for path in runs:
                runs[path].append(time_generation(trainer, prompt_ids, path, args.generations))
        shares = {}
        if args.steps:
            shares = {"trl_default": generation_share(args, Path(scratch) / "a", False),
                      "tunelab": generation_share(args, Path(scratch) / "b", True)}  # fmt: skip
    summary: dict[str, Any] = {"machine": cpu_line(), "model": args.model, "threads": torch.get_num_threads(),
                               "rows": len(prompt_ids), "max_tokens": args.max_tokens, "bf16": args.bf16,
                               "repeats": args.repeats}  # fmt: skip
    for path, results in runs.items():
        summary[path] = {key: statistics.median(r[key] for r in results) for key in results[0]} | shares.get(path, {})
    summary["ratio_tokens_per_second"] = (
        summary["tunelab"]["tokens_per_second"] / summary["trl_default"]["tokens_per_second"]
    )
    print(f"machine: {summary['machine']}; {summary['rows']} rows ({args.prompts} prompts x {args.generations}), "
          f"up to {args.max_tokens} tokens, bf16 mixed precision {'on' if args.bf16 else 'off'}, "
          f"medians of {args.repeats}")  # fmt: skip
    print(f"{'path':<12} {'tokens/s':>9} {'s/batch':>8} {'tokens':>7} {'s/GRPO step':>12} {'generation share':>17}")
    for path in runs:
        row = summary[path]
        step = f"{row['step_seconds']:.1f}" if "step_seconds" in row else "-"
        share = f"{row['generation_share']:.0%}" if "generation_share" in row else "-"
        print(f"{path:<12} {row['tokens_per_second']:>9.1f} {row['seconds']:>8.2f} {row['tokens']:>7.0f} {step:>12} "
              f"{share:>17}")  # fmt: skip
    print(f"tunelab / TRL default tokens/s: {summary['ratio_tokens_per_second']:.2f}x")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
