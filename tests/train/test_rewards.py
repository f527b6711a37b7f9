"""The RL rewards: each built-in reward on hand-made completions, and every way a reward can fail named clearly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunelab.config.schema import Recipe
from tunelab.train.rewards import RewardError, build_rewards, weighted_total

REPO = Path(__file__).resolve().parents[2]
SCHEMA = REPO / "examples" / "quickstart" / "schema.json"
REFERENCE = {"customer": "Ana Li", "product": "cap", "quantity": 2, "size": None, "color": "red", "city": "Oslo",
             "express": False}  # fmt: skip


def rewards(*specs: dict):
    recipe = Recipe.model_validate({"name": "r", "data": {"sources": []}, "reward": list(specs)})
    return build_rewards(recipe.reward)


def call(reward, completions, **columns):
    prompts = [[{"role": "user", "content": "order"}]] * len(completions)
    chat = [[{"role": "assistant", "content": c}] for c in completions]
    return reward.fn(prompts=prompts, completions=chat, completion_ids=[[1]] * len(completions), **columns)


def test_the_json_rewards_score_as_the_eval_metrics_do():
    valid, schema, fields, exact = rewards(
        {"type": "json_valid"}, {"type": "json_schema", "json_schema": str(SCHEMA)}, {"type": "field_accuracy"},
        {"type": "exact_match"},
    )  # fmt: skip
    right = json.dumps(REFERENCE)
    one_off = json.dumps({**REFERENCE, "quantity": 3})
    bad_schema = json.dumps({**REFERENCE, "size": "XXL"})
    prose = f"Sure! {right}"
    completions = [right, one_off, bad_schema, prose]
    reference = [right] * 4
    assert call(valid, completions) == [1.0, 1.0, 1.0, 0.0]
    assert call(schema, completions) == [1.0, 1.0, 0.0, 0.0]
    assert call(fields, completions, reference=reference) == pytest.approx([1.0, 6 / 7, 6 / 7, 0.0])
    assert call(exact, completions, reference=reference) == [1.0, 0.0, 0.0, 0.0]


def test_regex_and_the_length_penalty():
    anywhere, whole, short = rewards(
        {"type": "regex", "pattern": r"\d+"}, {"type": "regex", "pattern": r"\d+", "full": True},
        {"type": "max_words", "max_words": 4},
    )  # fmt: skip
    assert (anywhere.name, whole.name) == ("regex", "regex_2")
    assert call(anywhere, ["abc 12", "none", " 42 "]) == [1.0, 0.0, 1.0]
    assert call(whole, ["abc 12", "none", " 42 "]) == [0.0, 0.0, 1.0]
    assert call(short, ["one two", "a b c d e f", "a b c d e f g h i j"]) == [0.0, -0.5, -1.0]


def test_weights_sum_with_a_missing_value_as_zero():
    a, b = rewards({"type": "json_valid", "weight": 2.0}, {"type": "exact_match", "weight": 0.5})
    assert weighted_total([a, b], [[1.0, 0.0], [1.0, None]]) == [2.5, 0.0]


def test_a_python_reward_with_trls_signature(tmp_path):
    module = tmp_path / "my_rewards.py"
    module.write_text("def brevity(prompts, completions, **kwargs):\n"
                      "    return [1.0 / (1 + len(c[0]['content'])) for c in completions]\n"
                      "def broken(prompts, completions, **kwargs):\n"
                      "    return [1 / 0 for c in completions]\n"
                      "def nan(prompts, completions, **kwargs):\n"
                      "    return [float('nan')] * len(completions)\n"
                      "def short(prompts, completions, **kwargs):\n"
                      "    return [1.0]\n"
                      "def text(prompts, completions, **kwargs):\n"
                      "    return ['good'] * len(completions)\n", encoding="utf-8")  # fmt: skip
    brevity, broken, nan, short, text = rewards(
        *({"type": "python", "function": f"{module}:{name}"} for name in ("brevity", "broken", "nan", "short", "text"))
    )
    assert brevity.name == "brevity" and call(brevity, ["abc"]) == [0.25]
    with pytest.raises(RewardError, match=r"reward broken failed on the batch with records 'r-1', 'r-2': "
                                          r"ZeroDivisionError"):  # fmt: skip
        call(broken, ["a", "b"], id=["r-1", "r-2"])
    with pytest.raises(RewardError, match=r"reward nan returned nan for record 'r-1'; a reward is a finite number"):
        call(nan, ["a"], id=["r-1"])
    with pytest.raises(RewardError, match=r"reward short returned 1 values for 2 completions"):
        call(short, ["a", "b"])
    with pytest.raises(RewardError, match=r"reward text returned 'good' for completion 0 of the batch"):
        call(text, ["a"])


def test_a_python_reward_that_cannot_be_loaded(tmp_path):
    module = tmp_path / "bad.py"
    module.write_text("import not_a_module_anywhere\n", encoding="utf-8")
    with pytest.raises(RewardError, match="importing .*bad.py failed: ModuleNotFoundError"):
        rewards({"type": "python", "function": f"{module}:f"})
    good = tmp_path / "good.py"
    good.write_text("def score(prompts, completions, **kw):\n    return [0.0] * len(completions)\n", encoding="utf-8")
    with pytest.raises(RewardError, match="has no function 'scor'; it defines score"):
        rewards({"type": "python", "function": f"{good}:scor"})


def test_reference_rewards_need_references():
    (fields,) = rewards({"type": "field_accuracy"})
    with pytest.raises(
        RewardError, match="reward field_accuracy: field_accuracy compares with each record's reference"
    ):
        call(fields, ["{}"])


class RatingServer:
    """An OpenAI-compatible chat endpoint that rates: [[9]] for an answer with GOOD in it, [[2]] otherwise, and no
    rating at all for one with MUMBLE."""

    def __init__(self):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                answer = body["messages"][-1]["content"].split("[Answer]")[-1]
                text = "I'd say it is fine" if "MUMBLE" in answer else "[[9]]" if "GOOD" in answer else "[[2]]"
                reply = {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                         "choices": [{"index": 0, "finish_reason": "stop",
                                      "message": {"role": "assistant", "content": text}}]}  # fmt: skip
                data = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_an_llm_judge_rates_answers_and_an_unreadable_rating_is_no_reward():
    server = RatingServer()
    try:
        (judge,) = rewards({"type": "judge", "base_url": server.url, "model": "rater"})
        assert call(judge, ["a GOOD answer", "a poor one", "MUMBLE"]) == [
            pytest.approx(8 / 9),
            pytest.approx(1 / 9),
            None,
        ]
    finally:
        server.server.shutdown()


def test_an_unreachable_judge_is_named():
    (judge,) = rewards({"type": "judge", "base_url": "http://127.0.0.1:9/v1", "model": "rater", "timeout_s": 2})
    with pytest.raises(RewardError, match=r"reward judge failed .*judge endpoint http://127.0.0.1:9/v1 is unreachable"):
        call(judge, ["x"], id=["r-7"])


def test_a_reward_model_scores_prompt_and_answer_together_in_batches(tmp_path, tiny_model_dir):
    """Batched and padded, the scores equal the reward model's score of each conversation alone."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tunelab.eval.preference import reward_model_scorer
    from tunelab.model.reward import load_reward_model

    folder = tmp_path / "rm"
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(folder)
    (scorer,) = rewards({"type": "reward_model", "run": str(folder), "batch_size": 2})
    answers = ['{"a": 1}', "a much longer answer with many more words in it", "x"]
    scores = call(scorer, answers)
    single = reward_model_scorer(*load_reward_model(str(folder)))
    prompt = [{"role": "user", "content": "order"}]
    expected = [single(prompt, [{"role": "assistant", "content": a}]) for a in answers]
    assert scores == pytest.approx(expected, abs=1e-4)
    assert len(set(scores)) == 3
