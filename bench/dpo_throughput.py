"""Benchmark: tunelab's DPO stage against TRL's DPOTrainer + PEFT, same model, pairs, LoRA, beta and optimizer steps.

    .venv/bin/python bench/dpo_throughput.py --out bench/results/dpo_throughput.json

Configurations, each run in its own subprocess (so peak RSS is its own) and interleaved, `--repeats` times:

- `trl_defaults`: TRL `DPOTrainer` + PEFT as its documentation runs it: `DPOConfig` defaults on a CPU (bf16 autocast,
  gradient checkpointing on), padded [prompt + chosen] and [prompt + rejected] rows, the reference being the policy
  with its adapter disabled.
- `trl_no_checkpointing`: the same without gradient checkpointing, and bf16 only where this CPU has native bf16
  matrix instructions: TRL at its best here.
- `tunelab`: `tunelab.train.fit.fit` with the dpo stage, the code `tunelab run` trains with: its speed plan, and each
  pair's prompt computed once with the LM head on completion tokens only (train/shared_prompt.py).
- `tunelab_trl_forward`: tunelab with `train.padding_free: false`, i.e. TRL's own forward: what the pair forward adds.

Same pairs (examples/preference/train.jsonl, the first steps × batch of them in a seeded order; the held-out pairs from
examples/preference/test.jsonl), same LoRA (r=16, alpha=32, all linear layers), AdamW, learning rate, schedule, beta,
max length and number of optimizer steps. Reported, as medians over the repeats: real (non-padding) tokens per second
of training (TRL's own count of the [prompt + answer] rows, identical for every configuration), peak RSS, training
loss, and the held-out DPO loss after training (sigmoid loss, β as trained, reference = adapter disabled, fp32, the
same code for all).
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from train_throughput import cpu_line, matmul_peak, print_ratios, run_result

REPO = Path(__file__).resolve().parents[1]
PAIRS = REPO / "examples" / "preference"
CONFIGURATIONS = ["trl_defaults", "trl_no_checkpointing", "tunelab", "tunelab_trl_forward"]


def read_pairs(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _lora_config():
    from peft import LoraConfig

    return LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")


def _common_args(args) -> dict[str, Any]:
    return {"max_steps": args.steps, "per_device_train_batch_size": args.batch, "learning_rate": args.lr,
            "lr_scheduler_type": "linear", "warmup_steps": 0, "optim": "adamw_torch", "logging_steps": 1,
            "beta": args.beta, "max_length": args.max_length, "seed": args.seed,
            "dataloader_num_workers": 0}  # fmt: skip


def _train_trl(config: str, model, tokenizer, pairs, args, out: Path, bf16_fast: bool):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    values = _common_args(args) | {"output_dir": str(out), "report_to": "none", "use_cpu": True,
                                   "save_strategy": "no", "eval_strategy": "no",
                                   "include_num_input_tokens_seen": "non_padding"}  # fmt: skip
    if config == "trl_no_checkpointing":
        values |= {"gradient_checkpointing": False, "activation_checkpointing": False, "bf16": bf16_fast}
    rows = [{name: pair[name] for name in ("prompt", "chosen", "rejected")} for pair in pairs]
    trainer = DPOTrainer(model=model, args=DPOConfig(**values), train_dataset=Dataset.from_list(rows),
                         processing_class=tokenizer, peft_config=_lora_config())  # fmt: skip
    seconds = trainer.train().metrics["train_runtime"]
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    model = trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)
    settings = {"bf16": trainer.args.bf16, "gradient_checkpointing": trainer.args.gradient_checkpointing}
    return model, seconds, int(trainer.state.num_input_tokens_seen), losses, settings


def _train_tunelab(config: str, model_name: str, pairs, args, out: Path):
    import yaml

    from tunelab.data.pipeline import load_recipe_sets
    from tunelab.model.load import load_model
    from tunelab.recipe import load_recipe
    from tunelab.runs import RunDir
    from tunelab.train.fit import fit
    from tunelab.train.stages import get_stage

    data = out / "train.jsonl"
    data.write_text("".join(json.dumps(pair, ensure_ascii=False) + "\n" for pair in pairs), encoding="utf-8")
    train = {k: v for k, v in _common_args(args).items() if k not in ("seed", "max_length")}
    if config == "tunelab_trl_forward":
        train["padding_free"] = False
    recipe_dict = {
        "name": "bench", "output_dir": str(out / "runs"), "seed": args.seed, "stage": "dpo",
        "model": {"name": model_name},
        "data": {"sources": [{"path": str(data)}], "validation": None, "max_length": args.max_length},
        "method": {"type": "lora", "r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"},
        "train": train | {"save_steps": 10_000},
        "eval": {"base": False, "forgetting": False},
        "export": {"merge": False},
    }  # fmt: skip
    (out / "recipe.yaml").write_text(yaml.safe_dump(recipe_dict, allow_unicode=True), encoding="utf-8")
    recipe = load_recipe(out / "recipe.yaml")
    stage = get_stage("dpo")
    model, tokenizer, _ = load_model(recipe.model.name)
    splits = stage.build_datasets(load_recipe_sets(recipe.data, recipe.seed), recipe, tokenizer, [])
    run = RunDir.prepare(Path(recipe.output_dir) / recipe.name, resume=False, overwrite=True)
    result = fit(stage, recipe, run, model, tokenizer, splits)
    losses = [row["loss"] for row in run.metrics() if row.get("loss") is not None]
    training = json.loads((run.path / "training.json").read_text())
    settings = {key: training.get(key) for key in ("bf16", "gradient_checkpointing", "attention", "pair_forward")}
    return result.model, result.train_seconds, result.tokens_seen, losses, settings


def held_out_dpo_loss(model, tokenizer, pairs, beta: float) -> float:
    """Mean sigmoid DPO loss over the held-out pairs, fp32, the reference being the policy with its adapter disabled."""
    import torch
    import torch.nn.functional as F

    from tunelab.eval.preference import answer_log_likelihood
    from tunelab.train.packing import restore_attention

    restore_attention(model.get_base_model())
    model.eval().float()
    losses = []
    for pair in pairs:
        policy = [
            answer_log_likelihood(model, tokenizer, pair["prompt"], pair[side]) for side in ("chosen", "rejected")
        ]
        with model.disable_adapter():
            reference = [
                answer_log_likelihood(model, tokenizer, pair["prompt"], pair[s]) for s in ("chosen", "rejected")
            ]
        margin = (policy[0] - reference[0]) - (policy[1] - reference[1])
        losses.append(float(-F.logsigmoid(torch.tensor(beta * margin))))
    return statistics.mean(losses)


def worker(args) -> None:
    import torch

    from tunelab.hardware import bf16_is_fast
    from tunelab.model.load import load_model

    torch.set_num_threads(args.threads)
    dataset = json.loads(Path(args.dataset).read_text(encoding="utf-8"))
    out = Path(tempfile.mkdtemp(prefix=f"tunelab-dpo-bench-{args.worker}-"))
    if args.worker.startswith("tunelab"):
        model, seconds, tokens, losses, settings = _train_tunelab(args.worker, args.model, dataset["train"], args, out)
        _, tokenizer, _ = load_model(args.model)
    else:
        torch.manual_seed(args.seed)
        model, tokenizer, _ = load_model(args.model)
        trained = _train_trl(args.worker, model, tokenizer, dataset["train"], args, out, bf16_is_fast())
        model, seconds, tokens, losses, settings = trained
    result = {
        "configuration": args.worker,
        "train_seconds": seconds,
        "real_tokens": tokens,
        "real_tokens_per_s": tokens / seconds,
        "final_loss": losses[-1],
        "mean_loss": statistics.mean(losses),
        "losses": losses,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "held_out_loss": held_out_dpo_loss(model, tokenizer, dataset["held_out"], args.beta),
        "settings": settings,
    }
    print("RESULT " + json.dumps(result), flush=True)


def run_worker(config: str, args, dataset_file: Path) -> dict[str, Any]:
    command = [sys.executable, __file__, "--worker", config, "--dataset", str(dataset_file), "--model", args.model,
               "--steps", str(args.steps), "--batch", str(args.batch), "--lr", str(args.lr), "--seed", str(args.seed),
               "--beta", str(args.beta), "--max-length", str(args.max_length),
               "--threads", str(args.threads)]  # fmt: skip
    return run_result(config, command)


def summarize(results: dict[str, list[dict]]) -> dict[str, Any]:
    table = {}
    for name, runs in results.items():
        table[name] = {
            "real_tokens_per_s": statistics.median(r["real_tokens_per_s"] for r in runs),
            "real_tokens": runs[0]["real_tokens"],
            "peak_rss_gib": statistics.median(r["peak_rss_gib"] for r in runs),
            "final_loss": statistics.median(r["final_loss"] for r in runs),
            "held_out_loss": statistics.median(r["held_out_loss"] for r in runs),
            "settings": runs[0]["settings"],
            "runs": [r["real_tokens_per_s"] for r in runs],
        }
    ratios = {}
    if "tunelab" in table and "trl_defaults" in table:
        ours, default = table["tunelab"], table["trl_defaults"]
        ratios = {
            "tunelab_vs_trl_defaults_tokens_per_s": ours["real_tokens_per_s"] / default["real_tokens_per_s"],
            "tunelab_vs_trl_defaults_peak_rss": ours["peak_rss_gib"] / default["peak_rss_gib"],
            "tunelab_vs_trl_defaults_held_out_loss": ours["held_out_loss"] / default["held_out_loss"] - 1,
        }
        if "trl_no_checkpointing" in table:
            best = table["trl_no_checkpointing"]["real_tokens_per_s"]
            ratios["tunelab_vs_trl_no_checkpointing_tokens_per_s"] = ours["real_tokens_per_s"] / best
    return {"table": table, "ratios": ratios}


def print_table(summary: dict, machine: str) -> None:
    print(f"\n{machine}")
    print(f"{'configuration':<22} {'tok/s':>7} {'×(a)':>6} {'RSS GiB':>8} {'final':>7} {'held-out':>9}  settings")
    base = summary["table"].get("trl_defaults", next(iter(summary["table"].values())))["real_tokens_per_s"]
    for name, row in summary["table"].items():
        print(f"{name:<22} {row['real_tokens_per_s']:7.1f} {row['real_tokens_per_s'] / base:6.2f} "
              f"{row['peak_rss_gib']:8.2f} {row['final_loss']:7.4f} {row['held_out_loss']:9.4f}  "
              f"{json.dumps(row['settings'])}")  # fmt: skip
    print_ratios(summary["ratios"])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--steps", type=int, default=5, help="optimizer steps per configuration")
    parser.add_argument("--batch", type=int, default=8, help="pairs per optimizer step")
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--held-out", type=int, default=32, help="held-out pairs scored after training")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: physical cores)")
    parser.add_argument("--only", nargs="+", choices=CONFIGURATIONS, help="run only these configurations")
    parser.add_argument("--out", help="write the figures to this JSON file")
    parser.add_argument("--worker", choices=CONFIGURATIONS, help=argparse.SUPPRESS)
    parser.add_argument("--dataset", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads is None:
        from tunelab.hardware import physical_cores

        args.threads = physical_cores()
    if args.worker:
        return worker(args)
    rng = random.Random(args.seed)
    train = read_pairs(PAIRS / "train.jsonl")
    rng.shuffle(train)
    held_out = read_pairs(PAIRS / "test.jsonl")
    rng.shuffle(held_out)
    dataset = {"train": train[: args.steps * args.batch], "held_out": held_out[: args.held_out]}
    dataset_file = Path(tempfile.mkdtemp(prefix="tunelab-dpo-bench-")) / "dataset.json"
    dataset_file.write_text(json.dumps(dataset, ensure_ascii=False), encoding="utf-8")
    peaks = {name: matmul_peak(name, args.threads) for name in ("bfloat16", "float32")}
    machine = (f"{cpu_line()}; torch threads {args.threads}; matmul peak bf16 {peaks['bfloat16']:.0f} GFLOP/s, "
               f"fp32 {peaks['float32']:.0f} GFLOP/s")  # fmt: skip
    print(f"{machine}\n{len(dataset['train'])} training pairs, {len(dataset['held_out'])} held-out pairs "
          f"(examples/preference); {args.steps} steps of {args.batch} pairs; LoRA r=16 all linear",
          flush=True)  # fmt: skip
    configurations = args.only or CONFIGURATIONS
    results: dict[str, list[dict]] = {name: [] for name in configurations}
    for repeat in range(args.repeats):
        for name in configurations:
            result = run_worker(name, args, dataset_file)
            results[name].append(result)
            print(f"  {name:<22} run {repeat + 1}: {result['real_tokens_per_s']:6.1f} real tok/s "
                  f"({result['real_tokens']} tokens), {result['peak_rss_gib']:.2f} GiB, "
                  f"held-out {result['held_out_loss']:.4f}", flush=True)  # fmt: skip
    summary = summarize(results)
    print_table(summary, machine)
    report = summary | {"machine": machine, "matmul_peak_gflops": peaks,
                        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "worker", "dataset")},
                        "command": "bench/dpo_throughput.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                        "runs": results}  # fmt: skip
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
