"""How an exported model (a GGUF file read back, a quantised folder) is checked against the merged model it was made
from: the tokenizer's prompt ids, next-token logits on a few prompts, and the run's held-out test set answered by
both (identical greedy answers, each metric's change with a paired-bootstrap 95% interval), plus sizes on disk."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunelab.errors import RunError
from tunelab.runs import RunDir

LOGIT_PROMPTS = 4


def check_exportable(run: RunDir, what: str) -> None:
    """Refuse a run whose model cannot become one plain generating model: a reward model, a virtual-token or other
    unmergeable adapter, an unfinished run (each with what to do instead)."""
    from tunelab.model.methods import method_spec

    recipe = run.read_recipe()
    if recipe.get("stage") == "rm":
        raise RunError(f"{run.path} is a reward model (it scores, it does not generate): {what} export is for models "
                       "that generate; export the adapter or copy its merged/ folder")  # fmt: skip
    spec = method_spec(recipe["method"]["type"])
    if not spec.exports_merged:
        raise RunError(f"{run.path} cannot be exported as {what}: the export holds one plain model and "
                       f"{spec.no_merge}; export the adapter instead (tunelab export <run>)")  # fmt: skip
    state = run.status().get("state")
    if state != "completed":
        raise RunError(f"{run.path}: the run is {state or 'not started'}, not completed; finish it (tunelab run "
                       "<its recipe> --resume) before exporting it")  # fmt: skip


def compare_with_merged(run: RunDir, folder: Path, model, tokenizer, files: dict[str, Path], label: str,
                        export_bytes: int) -> dict:  # fmt: skip
    """`model`/`tokenizer` (the export, loaded as a user would, `export_bytes` on disk) against the merged model in
    `folder`; `files`: where the held-out answers go ("reference": the merged model's, "predictions": the export's)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunelab.data.tokenize import ensure_chat_template
    from tunelab.model.load import quiet_loading, sync_generation_eos

    quiet_loading()
    reference = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    reference_tokenizer = AutoTokenizer.from_pretrained(folder)
    for tok, lm in ((reference_tokenizer, reference), (tokenizer, model)):
        ensure_chat_template(tok)
        sync_generation_eos(lm.generation_config, tok)
    records = _records(run)
    check = {"merged_bytes": folder_bytes(folder),
             "tokenizer": _tokenizer_check(reference_tokenizer, tokenizer, records),
             "logits": _logit_check(reference, model, reference_tokenizer, records)}  # fmt: skip
    check["size_ratio"] = round(export_bytes / check["merged_bytes"], 4)
    merged_pair, export_pair = (reference, reference_tokenizer), (model, tokenizer)
    check["held_out"] = _held_out_check(run, merged_pair, export_pair, records, files, label)
    return check


def _records(run: RunDir) -> list[dict]:
    from tunelab.eval.evaluate import _test_records

    recipe = run.read_recipe()
    test = recipe["data"].get("test")
    return _test_records(test, recipe["data"].get("system"), recipe["eval"].get("limit")) if test else []


def _prompt_ids(tokenizer, records: list[dict]) -> list[list[int]]:
    from tunelab.data.tokenize import prompt_ids_for_generation

    prompts = [prompt_ids_for_generation(tokenizer, r["messages"], r.get("tools")) for r in records]
    return prompts or [prompt_ids_for_generation(tokenizer, [{"role": "user", "content": "Hello! Who are you?"}])]


def _tokenizer_check(reference_tokenizer, tokenizer, records: list[dict]) -> dict[str, Any]:
    """The GGUF vocabulary must give the same prompt token ids (chat template included) as the original tokenizer."""
    before, after = _prompt_ids(reference_tokenizer, records), _prompt_ids(tokenizer, records)
    differing = sum(a != b for a, b in zip(before, after, strict=True))
    return {"prompts": len(before), "identical_ids": differing == 0, "differing": differing}


def _logit_check(reference, model, tokenizer, records: list[dict]) -> dict[str, Any]:
    """Next-token logits at every prompt position of a few prompts: the largest difference and how often the top
    token agrees (the rounding a quantised file adds)."""
    import torch

    worst, agree, positions = 0.0, 0, 0
    with torch.no_grad():
        for ids in _prompt_ids(tokenizer, records)[:LOGIT_PROMPTS]:
            batch = torch.tensor([ids])
            a, b = reference(batch).logits[0], model(batch).logits[0]
            worst = max(worst, (a - b).abs().max().item())
            agree += int((a.argmax(-1) == b.argmax(-1)).sum())
            positions += len(ids)
    return {"max_abs_diff": round(worst, 5), "top1_agreement": round(agree / positions, 4), "positions": positions}


def _held_out_check(run, merged: tuple, export: tuple, records: list[dict], files: dict, label: str) -> dict | None:
    """Both models answer the run's test set greedily: the share of identical answers, and each metric's change
    with a paired-bootstrap 95% interval. None without a test set (said in the summary)."""
    if not records:
        return None
    from tunelab.eval.comparison import compare_predictions
    from tunelab.eval.heldout import evaluate_model, read_predictions
    from tunelab.eval.metrics import load_json_schema

    settings = run.read_recipe()["eval"]
    schema = load_json_schema(settings["json_schema"]) if settings.get("json_schema") else None
    options = {"metrics": settings["metrics"], "max_new_tokens": settings["max_new_tokens"],
               "batch_size": settings["batch_size"], "schema_validator": schema}  # fmt: skip
    reports = {
        "merged": evaluate_model(*merged, records, files["reference"], label="merged", **options),
        label: evaluate_model(*export, records, files["predictions"], label=label, **options),
    }
    merged_rows, export_rows = read_predictions(files["reference"]), read_predictions(files["predictions"])
    identical = sum(a["prediction"] == b["prediction"] for a, b in zip(merged_rows, export_rows, strict=True))
    comparison = compare_predictions(merged_rows, export_rows)["metrics"]
    share = round(identical / len(records), 4)
    return {"records": len(records), "identical_answers": identical, "identical_share": share,
            "metrics": {label: report["metrics"] for label, report in reports.items()},
            "change": comparison}  # fmt: skip


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.glob("*.safetensors"))


def describe_check(check: dict[str, Any]) -> str:
    from tunelab.eval.comparison import format_interval

    merged = check["merged_bytes"] / 1e6
    size = f"{check['bytes'] / 1e6:.1f} MB ({check['size_ratio']:.2f}× the merged model's {merged:.1f} MB)"
    differing = check["tokenizer"]["differing"]
    tokens = "same token ids" if not differing else f"{differing} prompts tokenised DIFFERENTLY"
    held = check.get("held_out")
    if held is None:
        return f"{size}; {tokens}; no test set in the run, so the held-out quality was not measured"
    parts = [f"{held['identical_answers']}/{held['records']} identical greedy answers"]
    for name, change in held["change"].items():
        interval = format_interval(change["ci95"], name)
        parts.append(f"{name} {change['base']:.1%} → {change['tuned']:.1%} ({change['difference'] * 100:+.1f} pts, "
                     f"95% CI {interval})")  # fmt: skip
    return f"{size}; {tokens}; " + "; ".join(parts)
