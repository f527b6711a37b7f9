"""Benchmark: tunelab's training path against TRL's SFTTrainer + PEFT, same model, data, LoRA and optimizer steps.

    .venv/bin/python bench/train_throughput.py --out bench/results/train_throughput.json
    .venv/bin/python bench/train_throughput.py --full --out bench/results/train_throughput_full.json

Configurations, each run in its own subprocess (so peak RSS is its own) and interleaved, `--repeats` times:

- `trl_defaults`: TRL `SFTTrainer` + PEFT as most users (and LLaMA-Factory, Axolotl) run it: padded batches,
  TRL's default gradient checkpointing, fp32 on a CPU.
- `trl_packing_bf16` and `trl_packing_fp32`: TRL with its best CPU settings, `packing=True` (best-fit packing,
  position ids reset per sequence) with and without bf16; the faster of the two is "TRL best" (bf16 is only fast
  on CPUs with native bf16 matrix instructions). Packed rows are `max_length` = the tokens of `batch` average
  examples, one row per step, so every configuration sees about the same tokens per optimizer step.
- `tunelab`: `tunelab.train.fit.fit` with the sft stage, the code `tunelab run` trains with, and its speed plan, in a
  process set up as the CLI sets up its own (`tunelab.allocator.prepare_process`: freed memory kept, huge pages);
  `tunelab_checkpointing` the same with `train.gradient_checkpointing: true` (what the plan picks when memory is
  short), to show the memory/speed trade.

Same seeded dataset (single-turn instructions of 40–400 tokens: the LLaMA-Factory alpaca demo set when
`../shared/data` has it, otherwise generated), same LoRA (r=16, alpha=32, all linear layers), AdamW, learning rate,
schedule and number of optimizer steps. Reported, as medians over the repeats: real (non-padding) tokens per second
of training, peak RSS, final and mean training loss, held-out loss after training (the same fp32 evaluation for all),
and model FLOP utilisation (4·N FLOPs per token for LoRA, 6·N for `--full`) against bf16 and fp32 matrix-product
peaks measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
ALPACA = REPO.parent / "shared" / "data" / "llamafactory" / "alpaca_en_demo.json"
CONFIGURATIONS = ["trl_defaults", "trl_packing_bf16", "trl_packing_fp32", "tunelab", "tunelab_checkpointing"]
SYSTEM = "You are a helpful assistant."

# --- the dataset ------------------------------------------------------------------------------------------------


def _alpaca_records() -> list[dict[str, Any]]:
    rows = json.loads(ALPACA.read_text(encoding="utf-8"))
    records = []
    for row in rows:
        prompt = row["instruction"] + (f"\n\n{row['input']}" if row.get("input") else "")
        records.append({"prompt": prompt, "answer": row["output"]})
    return records


def _generated_records(count: int, rng: random.Random) -> list[dict[str, Any]]:
    words = ("the model data train answer question value system order customer result field table report "
             "number city shirt price list time first second because which would could").split()  # fmt: skip
    records = []
    for _ in range(count):
        prompt = " ".join(rng.choice(words) for _ in range(rng.randint(8, 60)))
        answer = " ".join(rng.choice(words) for _ in range(int(rng.lognormvariate(4.3, 0.7)) % 300 + 10))
        records.append({"prompt": prompt, "answer": answer})
    return records


def build_dataset(tokenizer, needed: int, held_out: int, seed: int) -> tuple[list[dict], list[dict], str]:
    """(train records, held-out records, source) in the openai messages layout, each 40–400 tokens long."""
    rng = random.Random(seed)
    source = "alpaca_en_demo" if ALPACA.is_file() else "generated"
    pool = _alpaca_records() if ALPACA.is_file() else _generated_records(4 * (needed + held_out), rng)
    rng.shuffle(pool)
    records = []
    for item in pool:
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": item["prompt"]},
                    {"role": "assistant", "content": item["answer"]}]  # fmt: skip
        length = len(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"])
        if 40 <= length <= 400:
            records.append({"messages": messages, "tokens": length})
        if len(records) == needed + held_out:
            break
    if len(records) < needed + held_out:
        raise SystemExit(f"only {len(records)} records of 40–400 tokens; ask for fewer --steps")
    return records[:needed], records[needed:], source


# --- one configuration, in a subprocess ---------------------------------------------------------------------------


def _lora_config():
    from peft import LoraConfig

    return LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")


def _common_args(args) -> dict[str, Any]:
    return {"max_steps": args.steps, "per_device_train_batch_size": args.batch, "learning_rate": args.lr,
            "lr_scheduler_type": "linear", "warmup_steps": 0, "optim": "adamw_torch", "logging_steps": 1,
            "save_strategy": "no", "eval_strategy": "no", "seed": args.seed, "dataloader_num_workers": 0}  # fmt: skip


def _train_trl(config: str, model, tokenizer, train_records, args, out: Path):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    # prompt-completion rows: TRL applies the chat template and trains on the completion only
    rows = [{"prompt": r["messages"][:-1], "completion": r["messages"][-1:]} for r in train_records]
    values = _common_args(args) | {"output_dir": str(out), "report_to": "none", "use_cpu": True, "bf16": False,
                                   "include_num_input_tokens_seen": "non_padding"}  # fmt: skip
    if config.startswith("trl_packing"):
        mean = statistics.mean(r["tokens"] for r in train_records)
        values |= {"packing": True, "max_length": int(mean * args.batch), "per_device_train_batch_size": 1,
                   "bf16": config.endswith("bf16")}  # fmt: skip
    trainer = SFTTrainer(model=model, args=SFTConfig(**values), train_dataset=Dataset.from_list(rows),
                         processing_class=tokenizer, peft_config=None if args.full else _lora_config())  # fmt: skip
    seconds = trainer.train().metrics["train_runtime"]  # the training loop only, as for tunelab below
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    model = trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)
    return model, seconds, int(trainer.state.num_input_tokens_seen), losses


def _train_tunelab(model_name: str, train_records, args, out: Path, checkpointing: bool = False):
    import yaml

    from tunelab.data.pipeline import load_recipe_sets
    from tunelab.model.load import load_model
    from tunelab.recipe import load_recipe
    from tunelab.runs import RunDir
    from tunelab.train.fit import fit
    from tunelab.train.stages import get_stage

    data = out / "train.jsonl"
    data.write_text("".join(json.dumps({"messages": r["messages"]}) + "\n" for r in train_records), encoding="utf-8")
    train = {k: v for k, v in _common_args(args).items() if k not in ("save_strategy", "eval_strategy", "seed")}
    recipe_dict = {
        "name": "bench",
        "output_dir": str(out / "runs"),
        "seed": args.seed,
        "model": {"name": model_name},
        "data": {"sources": [{"path": str(data)}], "validation": None, "max_length": 512},
        "method": {"type": "full"} if args.full else {"type": "lora", "r": 16, "alpha": 32, "dropout": 0.0},
        "train": train | {"save_steps": 10_000} | ({"gradient_checkpointing": True} if checkpointing else {}),
        "eval": {"base": False, "forgetting": False},
        "export": {"merge": False},
    }
    (out / "recipe.yaml").write_text(yaml.safe_dump(recipe_dict), encoding="utf-8")
    recipe = load_recipe(out / "recipe.yaml")
    from tunelab.data.pipeline import build_splits

    model, tokenizer, _ = load_model(recipe.model.name)
    splits = build_splits(load_recipe_sets(recipe.data, recipe.seed), recipe.data, tokenizer, recipe.seed, [])
    run = RunDir.prepare(Path(recipe.output_dir) / recipe.name, resume=False, overwrite=True)
    result = fit(get_stage(recipe.stage), recipe, run, model, tokenizer, splits)
    losses = [row["loss"] for row in run.metrics() if row.get("loss") is not None]
    plan = json.loads((run.path / "training.json").read_text())
    return result.model, result.train_seconds, result.tokens_seen, losses, plan


def held_out_loss(model, tokenizer, records) -> float:
    """Mean cross-entropy per answer token over the held-out records, fp32, one record at a time."""
    import torch

    from tunelab.data.tokenize import tokenize_examples
    from tunelab.train.packing import restore_attention

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    restore_attention(base)
    model.eval().float()
    rows, _ = tokenize_examples([{"messages": r["messages"]} for r in records], tokenizer, 512)
    total, count = 0.0, 0
    with torch.no_grad():
        for row in rows:
            ids, labels = torch.tensor([row["input_ids"]]), torch.tensor([row["labels"]])
            logits = model(input_ids=ids, use_cache=False).logits[0, :-1]
            targets = labels[0, 1:]
            keep = targets != -100
            total += float(torch.nn.functional.cross_entropy(logits[keep], targets[keep], reduction="sum"))
            count += int(keep.sum())
    return total / count


def worker(args) -> None:
    if args.worker.startswith("tunelab"):  # what `tunelab run` does first, before torch allocates (allocator.py)
        from tunelab.allocator import prepare_process

        prepare_process()
    import torch

    from tunelab.model.load import load_model

    torch.set_num_threads(args.threads)
    dataset = json.loads(Path(args.dataset).read_text(encoding="utf-8"))
    out = Path(tempfile.mkdtemp(prefix=f"tunelab-bench-{args.worker}-"))
    plan = None
    if args.worker.startswith("tunelab"):
        checkpointing = args.worker == "tunelab_checkpointing"
        model, seconds, tokens, losses, plan = _train_tunelab(args.model, dataset["train"], args, out, checkpointing)
        _, tokenizer, _ = load_model(args.model)
    else:
        torch.manual_seed(args.seed)
        model, tokenizer, _ = load_model(args.model)
        model, seconds, tokens, losses = _train_trl(args.worker, model, tokenizer, dataset["train"], args, out)
    result = {
        "configuration": args.worker,
        "train_seconds": seconds,
        "real_tokens": tokens,
        "real_tokens_per_s": tokens / seconds,
        "final_loss": losses[-1],
        "mean_loss": statistics.mean(losses),
        "losses": losses,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "held_out_loss": held_out_loss(model, tokenizer, dataset["held_out"]),
        "plan": plan,
    }
    print("RESULT " + json.dumps(result), flush=True)


# --- the parent: dataset, peaks, interleaved runs, medians ----------------------------------------------------------


def matmul_peak(dtype_name: str, threads: int, size: int = 2048, seconds: float = 3.0) -> float:
    """GFLOP/s of square matrix products in `dtype` on `threads` threads (the best of several timed rounds)."""
    import torch

    torch.set_num_threads(threads)
    dtype = getattr(torch, dtype_name)
    probe = torch.randn(512, 512, dtype=dtype)
    started = time.perf_counter()
    probe @ probe
    if 2 * 512**3 / (time.perf_counter() - started) / 1e9 < 5:  # emulated (no native instructions): 512² will do
        size = 512
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b  # warm-up
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        a @ b
        best = max(best, 2 * size**3 / (time.perf_counter() - started) / 1e9)
    return best


def cpu_line() -> str:
    try:
        info = Path("/proc/cpuinfo").read_text()
        name = next(line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name"))
        flags = next(line for line in info.splitlines() if line.startswith("flags")).split()
        extras = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    except (OSError, StopIteration):
        name, extras = platform.processor(), []
    return f"{name}, {os.cpu_count()} logical CPUs, {' '.join(extras) or 'no AVX2/AVX-512'}"


def run_worker(config: str, args, dataset_file: Path) -> dict[str, Any]:
    command = [sys.executable, __file__, "--worker", config, "--dataset", str(dataset_file), "--model", args.model,
               "--steps", str(args.steps), "--batch", str(args.batch), "--lr", str(args.lr), "--seed", str(args.seed),
               "--threads", str(args.threads), *(["--full"] if args.full else [])]  # fmt: skip
    return run_result(config, command)


def run_result(config: str, command: list[str]) -> dict[str, Any]:
    """Run one configuration's worker command; its RESULT line as a dict (a failure ends the bench with its stderr)."""
    done = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{config} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def print_ratios(ratios: dict[str, float]) -> None:
    for key, value in ratios.items():
        print(f"{key}: {value:+.2%}" if key.endswith("held_out_loss") else f"{key}: {value:.2f}")


def summarize(results: dict[str, list[dict]], peaks: dict[str, float], parameters: int, full: bool) -> dict:
    flops_per_token = (6 if full else 4) * parameters
    table = {}
    for name, runs in results.items():
        tok_s = statistics.median(r["real_tokens_per_s"] for r in runs)
        bf16 = name.endswith("bf16") or any((r["plan"] or {}).get("bf16") for r in runs)
        table[name] = {
            "real_tokens_per_s": tok_s,
            "peak_rss_gib": statistics.median(r["peak_rss_gib"] for r in runs),
            "final_loss": statistics.median(r["final_loss"] for r in runs),
            "mean_loss": statistics.median(r["mean_loss"] for r in runs),
            "held_out_loss": statistics.median(r["held_out_loss"] for r in runs),
            "mfu_vs_bf16_peak": tok_s * flops_per_token / (peaks["bfloat16"] * 1e9),
            "mfu_vs_own_precision_peak": tok_s * flops_per_token / (peaks["bfloat16" if bf16 else "float32"] * 1e9),
            "mfu_vs_best_peak": tok_s * flops_per_token / (max(peaks.values()) * 1e9),
            "precision": "bf16" if bf16 else "fp32",
            "runs": [r["real_tokens_per_s"] for r in runs],
        }
    packed = [name for name in ("trl_packing_bf16", "trl_packing_fp32") if name in table]
    best_trl = max(packed, key=lambda n: table[n]["real_tokens_per_s"])
    ours, default = table["tunelab"], table["trl_defaults"]
    ratios = {
        "tunelab_vs_trl_defaults_tokens_per_s": ours["real_tokens_per_s"] / default["real_tokens_per_s"],
        "tunelab_vs_trl_best_tokens_per_s": ours["real_tokens_per_s"] / table[best_trl]["real_tokens_per_s"],
        "tunelab_vs_trl_defaults_peak_rss": ours["peak_rss_gib"] / default["peak_rss_gib"],
        "tunelab_vs_trl_defaults_held_out_loss": ours["held_out_loss"] / default["held_out_loss"] - 1,
    }
    return {"table": table, "ratios": ratios, "best_trl": best_trl}


def print_table(summary: dict, machine: str) -> None:
    print(f"\n{machine}")
    print(f"{'configuration':<18} {'tok/s':>7} {'×(a)':>6} {'RSS GiB':>8} {'final':>7} {'held-out':>9} "
          f"{'MFU bf16':>9} {'MFU own':>8} {'MFU best':>9}")  # fmt: skip
    base = summary["table"]["trl_defaults"]["real_tokens_per_s"]
    for name, row in summary["table"].items():
        print(f"{name:<18} {row['real_tokens_per_s']:7.1f} {row['real_tokens_per_s'] / base:6.2f} "
              f"{row['peak_rss_gib']:8.2f} {row['final_loss']:7.4f} {row['held_out_loss']:9.4f} "
              f"{row['mfu_vs_bf16_peak']:9.1%} {row['mfu_vs_own_precision_peak']:8.1%} "
              f"{row['mfu_vs_best_peak']:9.1%}")  # fmt: skip
    print_ratios(summary["ratios"])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps per configuration")
    parser.add_argument("--batch", type=int, default=8, help="examples per optimizer step")
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--held-out", type=int, default=32, help="held-out examples scored after training")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: physical cores)")
    parser.add_argument("--full", action="store_true", help="full fine-tuning instead of LoRA")
    parser.add_argument("--only", nargs="+", choices=CONFIGURATIONS, help="run only these configurations")
    parser.add_argument("--out", help="write the figures to this JSON file")
    parser.add_argument("--worker", choices=CONFIGURATIONS, help=argparse.SUPPRESS)
    parser.add_argument("--dataset", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def runnable_configurations(configurations: list[str], peaks: dict[str, float]) -> tuple[list[str], dict[str, str]]:
    """The configurations worth running on this CPU, and why any other was skipped."""
    skipped = {}
    if peaks["bfloat16"] < peaks["float32"] and "trl_packing_bf16" in configurations:
        # without native bf16 matrix instructions bf16 products are emulated (here ~100x slower than fp32): TRL's
        # best CPU setting is then packing in fp32, and a bf16 run would take hours to say so
        skipped["trl_packing_bf16"] = (f"bf16 matrix products run at {peaks['bfloat16']:.1f} GFLOP/s here against "
                                       f"{peaks['float32']:.0f} in fp32 (no native bf16 on this CPU)")  # fmt: skip
        configurations = [name for name in configurations if name != "trl_packing_bf16"]
        print(f"skipping trl_packing_bf16: {skipped['trl_packing_bf16']}", flush=True)
    return configurations, skipped


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads is None:
        from tunelab.hardware import physical_cores

        args.threads = physical_cores()
    if args.worker:
        return worker(args)

    from tunelab.model.load import load_model

    model, tokenizer, _ = load_model(args.model)
    parameters = sum(p.numel() for p in model.parameters())
    del model
    train, held_out, source = build_dataset(tokenizer, args.steps * args.batch, args.held_out, args.seed)
    dataset_file = Path(tempfile.mkdtemp(prefix="tunelab-bench-")) / "dataset.json"
    dataset_file.write_text(json.dumps({"train": train, "held_out": held_out}), encoding="utf-8")
    lengths = sorted(r["tokens"] for r in train)
    machine = f"{cpu_line()}; torch threads {args.threads}"
    print(f"{machine}\n{len(train)} training examples ({source}), tokens min {lengths[0]} median "
          f"{lengths[len(lengths) // 2]} max {lengths[-1]}; {args.steps} steps of {args.batch}; "
          f"{'full fine-tuning' if args.full else 'LoRA r=16 all linear'}", flush=True)  # fmt: skip
    peaks = {name: matmul_peak(name, args.threads) for name in ("bfloat16", "float32")}
    print(f"matmul peak ({args.threads} threads): bf16 {peaks['bfloat16']:.1f} GFLOP/s, fp32 "
          f"{peaks['float32']:.0f} GFLOP/s", flush=True)  # fmt: skip
    configurations, skipped = runnable_configurations(args.only or CONFIGURATIONS, peaks)
    results: dict[str, list[dict]] = {name: [] for name in configurations}
    complete = not args.only
    for repeat in range(args.repeats):
        for name in configurations:
            result = run_worker(name, args, dataset_file)
            results[name].append(result)
            print(f"  {name:<18} run {repeat + 1}: {result['real_tokens_per_s']:6.1f} real tok/s, "
                  f"{result['peak_rss_gib']:.2f} GiB, held-out {result['held_out_loss']:.4f}", flush=True)  # fmt: skip
    summary = summarize(results, peaks, parameters, args.full) if complete else {"table": results}
    if complete:
        print_table(summary, machine)
    report = summary | {"skipped": skipped, "machine": machine, "matmul_peak_gflops": peaks, "parameters": parameters,
                        "dataset": {"source": source, "train": len(train), "held_out": len(held_out),
                                    "token_lengths": {"min": lengths[0], "median": lengths[len(lengths) // 2],
                                                      "max": lengths[-1]}},
                        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "worker", "dataset")},
                        "command": "bench/train_throughput.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                        "runs": results}  # fmt: skip
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
