"""`tunelab compare-methods`: the LoRA / prefix / adapter / full trade-off measured on the user's own task.

Every method trains on the same recipe — data, split, seed, optimizer steps — as an ordinary run
(`<out>/<name>-<method>`: `tunelab compare` and the report read them), each in its own process so that its peak memory
is its own. The base
model is evaluated once and shared (`run --base-from`) where the evaluation is the same; QLoRA evaluates its own
quantised base. Each method gets the learning rate its family needs (a fixed multiple of the recipe's, stated in the
output and overridable), since one rate cannot suit full fine-tuning and prompt tuning at once. The results — quality
with its interval, paired against the best method, trainable parameters, peak memory, training time, forgetting —
go into one table, three plots and a recommendation (compare_methods_report.py).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from tunelab.config.schema import Recipe
from tunelab.errors import TunelabError
from tunelab.runs import read_json, write_json

# method name → (method section given the recipe's LoRA section, learning-rate factor on the recipe's rate)
PRESETS: dict[str, tuple[Any, float]] = {
    "lora": (lambda lora: lora, 1.0),
    "dora": (lambda lora: lora | {"use_dora": True}, 1.0),
    "pissa": (lambda lora: lora | {"init": "pissa"}, 1.0),
    "loraplus": (lambda lora: lora | {"loraplus_lr_ratio": 16}, 0.5),  # LoRA+ pairs its B boost with a lower rate
    "qlora": (lambda lora: lora | {"type": "qlora"}, 1.0),
    "vera": (lambda lora: {"type": "vera", "r": 256}, 10.0),  # trains only scaling vectors: needs a larger rate
    "loha": (lambda lora: {"type": "loha", "r": 8, "alpha": 16}, 1.0),
    "lokr": (lambda lora: {"type": "lokr", "r": 8, "alpha": 16}, 1.0),
    "ia3": (lambda lora: {"type": "ia3"}, 3.0),
    "prefix": (lambda lora: {"type": "prefix", "virtual_tokens": 16}, 10.0),
    "prompt": (lambda lora: {"type": "prompt", "virtual_tokens": 16}, 30.0),
    "ptuning": (lambda lora: {"type": "ptuning", "virtual_tokens": 16}, 10.0),
    "llama_adapter": (lambda lora: {"type": "llama_adapter"}, 10.0),
    "bottleneck": (lambda lora: {"type": "bottleneck", "size": 64}, 1.0),  # starts as the identity, as LoRA does
    "freeze": (lambda lora: {"type": "freeze", "trainable_layers": 2}, 0.1),
    "full": (lambda lora: {"type": "full"}, 0.05),
}
DEFAULT_METHODS = "lora,dora,qlora,prefix,prompt,bottleneck,freeze,full"  # the list; ia3 on request
LORA_DEFAULT = {"type": "lora", "r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"}


def parse_methods(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in PRESETS]
    if unknown or not names:
        raise TunelabError(
            f"--methods: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(PRESETS)}"
        )
    if len(set(names)) != len(names):
        raise TunelabError("--methods: a method is named twice")
    return names


def parse_learning_rates(items: list[str] | None, methods: list[str]) -> dict[str, float]:
    """--lr method=value pairs."""
    rates = {}
    for item in items or []:
        name, _, value = item.partition("=")
        if name not in methods:
            raise TunelabError(f"--lr {item}: {name!r} is not among --methods ({', '.join(methods)})")
        try:
            rates[name] = float(value)
        except ValueError:
            raise TunelabError(f"--lr {item}: expected method=number, e.g. --lr full=2e-5") from None
    return rates


def parse_budget(text: str | None) -> float | None:
    """--budget 20m | 90s | 1h → seconds."""
    if text is None:
        return None
    units = {"s": 1, "m": 60, "h": 3600}
    number, unit = (text[:-1], text[-1]) if text and text[-1] in units else (text, "s")
    try:
        seconds = float(number) * units[unit]
    except ValueError:
        seconds = -1.0
    if not seconds > 0 or seconds == float("inf"):
        raise TunelabError(f"--budget {text}: expected a positive time such as 20m, 90s or 1h")
    return seconds


def method_recipes(recipe: Recipe, methods: list[str], out: Path, rates: dict[str, float],
                   budget: float | None = None, merge: bool = False) -> dict[str, dict]:  # fmt: skip
    """The recipe of each method's run: the user's, with the method, its learning rate, its name and folder; with a
    budget, the same wall-clock training time for each (train.max_seconds). Runs are not merged unless asked: the
    comparison does not need a merged model, and `tunelab export <run> --merged` makes one from the chosen run."""
    from tunelab.config.train_args import tunelab_defaults
    from tunelab.model.methods import method_spec
    from tunelab.workflow import saved_recipe

    document = saved_recipe(recipe)
    document.pop("_versions", None)
    lora = document["method"] if document["method"]["type"] == "lora" else LORA_DEFAULT
    base_rate = float(document["train"].get("learning_rate", tunelab_defaults()["learning_rate"]))
    recipes = {}
    for name in methods:
        build, factor = PRESETS[name]
        method = build(dict(lora))
        spec = method_spec(method["type"])
        train = document["train"] | {"learning_rate": rates.get(name, base_rate * factor)}
        train |= {"max_seconds": budget} if budget is not None else {}
        export = document["export"] | {"merge": bool(merge and document["export"]["merge"] and spec.can_merge)}
        recipes[name] = document | {"name": f"{recipe.name}-{name}", "output_dir": str(out), "method": method,
                                    "train": train, "export": export}  # fmt: skip
    return recipes


def run_method(name: str, document: dict, out: Path, base_from: Path | None, log) -> dict[str, Any]:
    """Train and evaluate one method in its own process; its outcome (never raises for a failed run)."""
    path = out / "recipes" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document, allow_unicode=True, sort_keys=False), encoding="utf-8")
    command = [sys.executable, "-m", "tunelab.cli", "run", str(path), "--overwrite"]
    command += ["--base-from", str(base_from)] if base_from is not None else []
    log(f"[tunelab] compare-methods: {name} (learning rate {document['train']['learning_rate']:g}) → "
        f"{out / document['name']}")  # fmt: skip
    started = time.perf_counter()
    with open(out / f"{name}.log", "w", encoding="utf-8") as handle:
        code = subprocess.call(command, stdout=handle, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - started
    run = out / document["name"]
    if code != 0:
        error = (read_json(run / "status.json", {}) or {}).get("error") or f"exit code {code}"
        log(f"[tunelab] compare-methods: {name} failed ({error}); its log: {out / f'{name}.log'}")
        return {"method": name, "run": str(run), "state": "failed", "error": error, "wall_seconds": seconds}
    return {"method": name, "run": str(run), "state": "completed", "wall_seconds": seconds}


def require_test_set(recipe: Recipe) -> None:
    """The comparison is on held-out data: a recipe without a test set is refused before anything trains."""
    if recipe.data.test is None:
        raise TunelabError("data.test: compare-methods scores every method on the same held-out records, and the "
                           "recipe has none; set data.test to a test file (records not in training)")  # fmt: skip


def check_out(out: Path, overwrite: bool) -> None:
    """An earlier comparison in `out` is not replaced unless asked."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not overwrite)):
        raise TunelabError(f"--out {out}: {'not a folder' if not out.is_dir() else 'holds an earlier comparison'}; "
                           "choose another --out" + ("" if not out.is_dir() else " or pass --overwrite"))  # fmt: skip


def compare_methods(recipe: Recipe, methods: list[str], out: Path, rates: dict[str, float], budget=None,
                    merge: bool = False, log=print) -> dict:  # fmt: skip
    """Run every method, then write the table, the plots and the recommendation into `out`; returns the summary."""
    from tunelab.compare_methods_report import summarise, write_report
    from tunelab.model.methods import method_spec

    out.mkdir(parents=True, exist_ok=True)
    documents = method_recipes(recipe, methods, out, rates, budget, merge)
    outcomes, shared = [], None
    for name in methods:
        own_base = bool(method_spec(documents[name]["method"]["type"]).loading)  # QLoRA: its quantised base
        outcome = run_method(name, documents[name], out, None if own_base else shared, log)
        outcomes.append(outcome)
        if shared is None and not own_base and outcome["state"] == "completed":
            shared = Path(outcome["run"])
    summary = summarise(recipe, outcomes, documents)
    write_json(out / "methods.json", summary)
    files = write_report(summary, out)
    log(f"[tunelab] compare-methods: {files['md']} ({files['html']})")
    return summary
