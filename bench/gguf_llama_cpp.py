"""Check a `tunelab export <run> --gguf …` file in llama.cpp itself (through llama-cpp-python), not only in
transformers' GGUF reader: the same test prompts, greedy, compared with the answers tunelab's verification recorded
(transformers reading the same file: <stem>.predictions.jsonl; the merged model: <stem>.reference.jsonl).

    make bench-setup                          # builds llama-cpp-python from source (about 30 min on 2 cores)
    .venv/bin/python bench/gguf_llama_cpp.py runs/quickstart/export/quickstart-q8_0.gguf \
        --out bench/results/gguf_llama_cpp_q8_0.json

Reports: llama.cpp's own tokenisation of each rendered prompt against the Hugging Face tokenizer's ids (the GGUF's
vocabulary, merges and pre-tokenizer as llama.cpp applies them); its greedy answers fed the same ids, as identical
shares against both recorded sets; the held-out metrics of its answers with paired 95% intervals against the merged
model's; and llama.cpp's generation speed here. The run's test set and metrics come from the run's recipe.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from train_throughput import cpu_line

from tunelab.eval.comparison import compare_predictions
from tunelab.eval.heldout import read_predictions
from tunelab.eval.metrics import load_json_schema, score_record


def run_folder(gguf: Path) -> Path:
    for parent in gguf.resolve().parents:
        if (parent / "recipe.yaml").is_file() and (parent / "status.json").is_file():
            return parent
    raise SystemExit(f"{gguf}: not inside a run directory; pass --run")


def llama_cpp_answers(gguf: Path, prompts: list[list[int]], texts: list[str], max_tokens: int, threads: int) -> dict:
    from llama_cpp import Llama

    llm = Llama(model_path=str(gguf), n_ctx=2048, n_threads=threads, verbose=False, logits_all=False)
    tokenised = [llm.tokenize(text.encode(), add_bos=False, special=True) for text in texts]
    answers, generated, started = [], 0, time.perf_counter()
    for ids in prompts:
        llm.reset()
        tokens = []
        for token in llm.generate(ids, temp=0.0, top_k=1, repeat_penalty=1.0, reset=True):
            if llm.token_eos() == token or len(tokens) >= max_tokens:
                break
            tokens.append(token)
        generated += len(tokens)
        answers.append(llm.detokenize(tokens).decode("utf-8", errors="replace"))
    seconds = time.perf_counter() - started
    return {"answers": answers, "tokenised": tokenised, "tokens": generated, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("gguf", type=Path)
    parser.add_argument("--run", type=Path, help="the run it was exported from (default: the folder holding it)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    from transformers import AutoTokenizer

    from tunelab.data.tokenize import ensure_chat_template, prompt_ids_for_generation
    from tunelab.export.model_check import _records
    from tunelab.model.load import run_model_folder
    from tunelab.runs import RunDir

    run = RunDir.open(str(args.run or run_folder(args.gguf)))
    stem = args.gguf.with_suffix("")
    recorded = {"transformers": read_predictions(Path(f"{stem}.predictions.jsonl")),
                "merged": read_predictions(Path(f"{stem}.reference.jsonl"))}  # fmt: skip
    tokenizer = AutoTokenizer.from_pretrained(run_model_folder(run.path))
    ensure_chat_template(tokenizer)
    records = _records(run)
    prompts = [prompt_ids_for_generation(tokenizer, r["messages"], r.get("tools")) for r in records]
    texts = [tokenizer.decode(ids) for ids in prompts]
    settings = run.read_recipe()["eval"]
    result = llama_cpp_answers(args.gguf, prompts, texts, settings["max_new_tokens"], args.threads)
    schema = load_json_schema(settings["json_schema"]) if settings.get("json_schema") else None
    rows = [{"id": row["id"], "category": row.get("category"), "prediction": answer,
             "scores": score_record(answer, row["reference"], settings["metrics"], schema)}
            for row, answer in zip(recorded["merged"], result["answers"], strict=True)]  # fmt: skip
    report: dict[str, Any] = {
        "cpu": cpu_line(),
        "gguf": str(args.gguf),
        "records": len(records),
        "tokenizer_identical_prompts": sum(a == b for a, b in zip(result["tokenised"], prompts, strict=True)),
        "identical_to": {
            name: sum(a["prediction"] == b for a, b in zip(rows_, result["answers"], strict=True))
            for name, rows_ in recorded.items()
        },  # fmt: skip
        "llama_cpp_vs_merged": compare_predictions(recorded["merged"], rows)["metrics"],
        "llama_cpp_tokens_per_second": round(result["tokens"] / result["seconds"], 1),
        "threads": args.threads,
    }
    text = json.dumps(report, indent=2, ensure_ascii=False)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
