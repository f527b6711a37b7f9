"""The Chat tab's answers: loading and every step on one decoding thread whichever thread asks, on the model's
packed (fused) weights, and the same greedy answer as transformers' `generate`."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import torch

from tunelab.model.targets import Target
from tunelab.serve.sampling import Sampling
from tunelab.ui import chat_models


def test_steps_run_on_one_thread_and_answer_as_generate(tiny_model_dir, monkeypatch):
    from transformers import AutoModelForCausalLM

    from tunelab.data.tokenize import prompt_ids_for_generation
    from tunelab.model.decode import FUSED

    threads = set()
    step = chat_models._step
    monkeypatch.setattr(chat_models, "_step", lambda *a: (threads.add(threading.current_thread().name), step(*a))[1])
    name = str(tiny_model_dir)
    loaded = chat_models.load(Target(name, name, None, None))
    assert FUSED in loaded.model.__dict__  # packed once when loaded (a llama: the fused decoder)
    messages = [{"role": "user", "content": "Please send two red shirts to Alice"}]
    answer = chat_models.stream_reply(loaded, messages, Sampling(max_tokens=12, temperature=0.0))
    with ThreadPoolExecutor(3) as pool:  # Gradio resumes a streaming generator on whichever thread is free
        replies = [r for r in iter(lambda: pool.submit(next, answer, None).result(), None)]
    assert threads == {"tunelab-chat-decoding_0"}  # the one thread of the decoding executor
    ids = prompt_ids_for_generation(loaded.tokenizer, messages)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False, eos_token_id=sorted(loaded.stops),
                             pad_token_id=loaded.tokenizer.pad_token_id)  # fmt: skip
    expected = [t for t in out[0, len(ids) :].tolist() if t not in loaded.stops]
    assert replies[-1].text == loaded.tokenizer.decode(expected, skip_special_tokens=True)


def test_a_prefix_tuning_adapter_streams_from_its_prefix_cache_and_answers_as_peft(tiny_model_dir, tmp_path):
    from peft import PrefixTuningConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunelab.data.tokenize import prompt_ids_for_generation
    from tunelab.model.peft_methods import load_adapter

    torch.manual_seed(5)
    peft = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                          PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4))  # fmt: skip
    with torch.no_grad():
        for parameter in peft.parameters():
            if parameter.requires_grad:
                parameter.normal_(0, 2.0)
    peft.save_pretrained(tmp_path / "prefix")
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(tmp_path / "prefix")
    loaded = chat_models.load(Target("orders", str(tiny_model_dir), str(tmp_path / "prefix"), None))
    assert loaded.virtual_tokens == 4 and not hasattr(loaded.model, "peft_config")  # the base model, on the cache
    messages = [{"role": "user", "content": "Please send two red shirts to Alice"}]
    replies = list(chat_models.stream_reply(loaded, messages, Sampling(max_tokens=12, temperature=0.0)))
    ids = torch.tensor([prompt_ids_for_generation(loaded.tokenizer, messages)])
    model = load_adapter(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tmp_path / "prefix").eval()
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False,
                             eos_token_id=sorted(loaded.stops), pad_token_id=loaded.tokenizer.pad_token_id)  # fmt: skip
    expected = [t for t in out[0, ids.shape[1] :].tolist() if t not in loaded.stops]
    assert replies[-1].text == loaded.tokenizer.decode(expected, skip_special_tokens=True)
