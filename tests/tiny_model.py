"""Builds a tiny llama model and a byte-level BPE tokenizer offline, for tests.

The tokenizer is trained on the fly on a small built-in corpus (English and Chinese, JSON punctuation), so no file is
downloaded and nothing large is committed. The chat template is ChatML, the layout SmolLM2 and Qwen use.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Please send two red shirts, size M, to Alice in Berlin by express delivery.",
    '{"customer": "Alice", "product": "shirt", "quantity": 2, "size": "M", "city": "Berlin"}',
    "请给北京的张伟寄三件蓝色的T恤，尺码L，普通快递。",
    "What is the capital of France? The capital of France is Paris.",
    "system user assistant tool You are a helpful assistant.",
    "Translate to Chinese: good morning. 早上好。谢谢你。",
    "0 1 2 3 4 5 6 7 8 9 10 100 1000 + - * / = ( ) [ ] { } : ; , . ! ? ' \"",
    "Summarize the text in one sentence. Answer with JSON only.",
]


def build_tokenizer(chat_template: bool = True, vocab_size: int = 400) -> PreTrainedTokenizerFast:
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(_CORPUS * 4, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    if chat_template:
        tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def build_tiny_model(path: Path, chat_template: bool = True, seed: int = 0, hidden_size: int = 64) -> Path:
    """Write a 2-layer llama (hidden 64 unless told) and its tokenizer to `path`; return `path`."""
    path = Path(path)
    tokenizer = build_tokenizer(chat_template=chat_template)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
