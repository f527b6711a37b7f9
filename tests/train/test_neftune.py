"""NEFTune on padding-free batches: each packed sequence gets the noise of its own length (α/√(L·d)), as it would
alone in a padded batch — transformers' hook would use the whole row's length — and a run with it trains."""

from __future__ import annotations

import json

import pytest
import torch

from tests.helpers import cli, tiny_recipe
from tunelab.train.neftune import PackedNeftune, lengths_per_token


def test_each_token_gets_the_length_of_its_own_sequence():
    positions = torch.tensor([[0, 1, 2, 0, 1, 0, 1, 2, 3, 0]])
    assert lengths_per_token(positions).tolist() == [[3, 3, 3, 2, 2, 4, 4, 4, 4, 1]]
    two_rows = torch.tensor([[0, 1, 2], [0, 1, 0]])  # a row's first token starts a sequence
    assert lengths_per_token(two_rows).tolist() == [[3, 3, 3], [2, 2, 1]]


def test_the_noise_of_a_packed_sequence_is_that_of_the_sequence_alone():
    embeddings = torch.nn.Embedding(50, 64)
    model = torch.nn.Module()
    model.get_input_embeddings = lambda: embeddings  # no get_decoder: the model's own forward is hooked
    model.forward = lambda input_ids, position_ids=None: embeddings(input_ids)
    neftune = PackedNeftune(alpha=5.0)
    neftune.model = model
    neftune.on_train_begin(None, None, None)
    torch.manual_seed(0)
    ids = torch.randint(0, 50, (1, 400))
    positions = torch.cat([torch.arange(100), torch.arange(300)]).unsqueeze(0)  # two sequences: 100 and 300 tokens
    with torch.no_grad():
        noise = model(ids, position_ids=positions) - embeddings.weight[ids]
    bounds = [5.0 / (length * 64) ** 0.5 for length in (100, 300)]
    assert noise[0, :100].abs().max() <= bounds[0] and noise[0, :100].abs().max() > 0.9 * bounds[0]
    assert noise[0, 100:].abs().max() <= bounds[1] and noise[0, 100:].abs().max() > 0.9 * bounds[1]
    embeddings.eval()
    assert torch.equal(model(ids, position_ids=positions), embeddings.weight[ids])  # no noise outside training
    neftune.on_train_end(None, None, None)
    embeddings.train()
    assert torch.equal(model(ids, position_ids=positions), embeddings.weight[ids])  # the hooks are gone


def test_a_padding_free_run_adds_the_noise_per_sequence(tmp_path, tiny_model_dir, capsys, monkeypatch):
    import transformers.trainer

    from tunelab.train import neftune

    seen, add_noise = [], neftune.PackedNeftune._add_noise

    def recorded(self, module, inputs, output):
        seen.append((module.training, None if self.positions is None else int((self.positions == 0).sum())))
        return add_noise(self, module, inputs, output)

    monkeypatch.setattr(neftune.PackedNeftune, "_add_noise", recorded)
    monkeypatch.setattr(transformers.trainer, "activate_neftune", lambda *a, **k: pytest.fail("transformers' hook"))
    recipe = tiny_recipe(tmp_path, tiny_model_dir, eval={"forgetting": {"enabled": False}})
    result = cli(["run", recipe, "train.neftune_noise_alpha=5", "train.max_steps=2"], capsys)
    assert result.exit_code == 0, result.err
    training = json.loads((tmp_path / "runs" / "tiny" / "training.json").read_text())
    assert training["padding_free"] is True
    packed = [starts for training_mode, starts in seen if training_mode]
    assert packed and all(starts and starts > 1 for starts in packed)  # rows of several sequences, each its own L
