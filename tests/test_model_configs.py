"""User model configs: ``model`` is a bundled name or the path of a Hugging Face
``LlamaConfig`` JSON file, checked from the JSON alone (the API never imports torch),
recorded with the file's SHA-256 in the trial config and in the export.

The good file is written by transformers' own ``LlamaConfig.to_json_file``, so the test
reads exactly what a user copies out of a Hub checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from transformers import LlamaConfig

from service.export import data_provenance
from studies.spec import StudySpec
from tests.service_fixtures import Server
from tests.worker_fixtures import UNIFORM_LOSS, Recorder, llama_config
from worker.config import TrialConfig
from worker.models import build_model, model_names
from worker.trainer import train

#: a one-layer T5-vocabulary Llama: sizes small enough to count its parameters by hand
SIZES = {
    "hidden_size": 16,
    "intermediate_size": 40,
    "num_attention_heads": 2,
    "num_hidden_layers": 1,
    "vocab_size": 32000,
}
#: embedding + head (2 x 32000 x 16) + q, k, v, o (4 x 16 x 16) + gate, up, down
#: (3 x 16 x 40) + two RMSNorms in the layer and one at the end (3 x 16)
SIZES_PARAMS = 2 * 32000 * 16 + 4 * 16 * 16 + 3 * 16 * 40 + 3 * 16


def hf_config_file(path: Path, **sizes: Any) -> Path:
    LlamaConfig(**{**SIZES, **sizes}).to_json_file(path)
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_an_hf_llama_config_file_is_a_model(tmp_path, monkeypatch):
    path = hf_config_file(tmp_path / "config.json")
    assert json.loads(path.read_text())["model_type"] == "llama"  # what HF writes
    config = TrialConfig(model=str(path))
    assert config.model == str(path)
    assert config.model_sha256 == sha256(path)
    assert config.tokenizer is None  # a T5-size vocabulary: the bundled T5 tokenizer
    assert TrialConfig(**config.model_dump(mode="json")) == config

    # A relative path is stored absolute: Ray trials run in their own working directory.
    monkeypatch.chdir(tmp_path)
    assert TrialConfig(model="config.json").model == str(path)

    model = build_model(config.model, seed=0, sha256=config.model_sha256)
    assert (model.config.hidden_size, model.config.num_hidden_layers) == (16, 1)
    assert model.config._attn_implementation == "sdpa"
    assert sum(p.numel() for p in model.parameters()) == SIZES_PARAMS


def test_every_bundled_model_records_its_file_hash():
    from worker.models import CONFIG_DIR

    for name in model_names():
        config = TrialConfig(model=name)
        assert config.model == name  # a bundled name stays a name
        assert config.model_sha256 == sha256(CONFIG_DIR / f"{name}.json")


def test_a_user_model_trains(tmp_path, token_cache_dir):
    path = hf_config_file(tmp_path / "user.json")
    config = llama_config(
        token_cache_dir, model=str(path), lr=1e-2, steps=6, eval_interval=3, variant="magma"
    )
    recorder = Recorder()
    final = recorder.run(config)
    assert final["status"] == "complete" and final["step"] == 6
    assert abs(recorder.losses[0] - UNIFORM_LOSS) < 0.1  # untrained: a uniform guess
    first, last = recorder.reports
    assert last["val_loss"] < first["val_loss"] < UNIFORM_LOSS
    assert {"survival/attention", "survival/mlp"} <= set(final)


def test_a_changed_file_is_a_different_trial_and_is_not_built_silently(tmp_path):
    path = hf_config_file(tmp_path / "model.json")
    before = TrialConfig(model=str(path), workload="llama-c4")
    hf_config_file(path, intermediate_size=48)
    after = TrialConfig(model=str(path), workload="llama-c4")
    assert after.model == before.model
    assert after.model_sha256 == sha256(path) != before.model_sha256
    assert after != before
    # A stored config keeps its recorded hash (it is what ran) ...
    assert TrialConfig(**before.model_dump(mode="json")).model_sha256 == before.model_sha256
    # ... and a trial refuses to build the changed file under it.
    with pytest.raises(ValueError, match="changed since the trial was configured"):
        train(before.model_copy(update={"steps": 1}))


BAD_FILES: list[tuple[str, Any, str]] = [
    ("missing", None, "no such file"),
    ("not-json", "{hidden_size: 16", "not valid JSON"),
    ("a-list", [16, 40], "a JSON list, not an object"),
    ("gpt2", {**SIZES, "model_type": "gpt2"}, "model_type is 'gpt2', not 'llama'"),
    ("no-vocab", {k: v for k, v in SIZES.items() if k != "vocab_size"}, "lacks ['vocab_size']"),
    ("zero-layers", {**SIZES, "num_hidden_layers": 0}, "num_hidden_layers must be a positive"),
    ("string-size", {**SIZES, "hidden_size": "16"}, "hidden_size must be a positive integer"),
    ("bool-size", {**SIZES, "num_attention_heads": True}, "num_attention_heads must be a positive"),
    (
        "heads",
        {**SIZES, "hidden_size": 30, "num_attention_heads": 4},
        "hidden_size (30) must be a multiple of num_attention_heads (4)",
    ),
    ("odd-head", {**SIZES, "hidden_size": 6, "num_attention_heads": 2}, "(3) must be even"),
    (
        "kv-heads",
        {**SIZES, "num_attention_heads": 4, "num_key_value_heads": 3},
        "num_attention_heads (4) must be a multiple of num_key_value_heads (3)",
    ),
    ("tokenizer", {**SIZES, "tokenizer": 5}, "tokenizer must be a tokenizer name"),
]


@pytest.mark.parametrize(("name", "content", "problem"), BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_a_bad_model_file_names_the_field_and_what_is_allowed(tmp_path, name, content, problem):
    path = tmp_path / f"{name}.json"
    if isinstance(content, str):
        path.write_text(content)
    elif content is not None:
        path.write_text(json.dumps(content))
    with pytest.raises(ValidationError) as info:
        TrialConfig(model=str(path))
    errors = info.value.errors()
    assert len(errors) == 1, errors
    assert errors[0]["loc"] == ("model",)
    message = errors[0]["msg"]
    assert problem in message
    assert str(path) in message
    assert f"a bundled model, one of {model_names()}" in message
    assert "LlamaConfig JSON file" in message

    # A study names the field as the spec spells it, and says the same.
    with pytest.raises(ValidationError) as info:
        StudySpec(name="user-model", workload={"model": str(path)}, trials=1)
    assert f"workload.model: must be a bundled model, one of {model_names()}" in str(info.value)
    assert problem in str(info.value)


def test_validating_a_model_file_imports_neither_torch_nor_transformers(tmp_path):
    """The API validates specs with this code and must not import torch (test_layering)."""
    path = hf_config_file(tmp_path / "config.json")
    code = (
        "import sys; from worker.config import TrialConfig; "
        f"c = TrialConfig(model={str(path)!r}); assert c.model_sha256; "
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert done.stdout.strip() == "[]", done.stderr


def test_the_export_records_the_model_file_and_the_hash_that_ran(tmp_path):
    path = hf_config_file(tmp_path / "config.json")
    stored = TrialConfig(model=str(path), workload="llama-c4").model_dump(mode="json")
    recorded = sha256(path)
    hf_config_file(path, num_hidden_layers=2)  # edited after the study ran
    provenance = data_provenance(stored)
    assert provenance["model"] == str(path)
    assert provenance["model_sha256"] == recorded != sha256(path)
    bundled = data_provenance(TrialConfig(model="llama-bytes").model_dump(mode="json"))
    assert bundled["model"] == "llama-bytes" and len(bundled["model_sha256"]) == 64


def test_the_api_rejects_a_bad_model_file_with_422(server: Server, tmp_path):
    good = hf_config_file(tmp_path / "good.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**SIZES, "model_type": "mistral"}))
    body: dict[str, Any] = {
        "name": "user-model",
        "workload": {"kind": "llama-c4", "model": str(bad), "steps": 2, "eval_interval": 1},
        "sampler": "grid",
        "search": {"lr": [0.01]},
    }
    response = httpx.post(f"{server.api}/studies", json=body)
    assert response.status_code == 422, response.text
    details = {d["field"]: d["message"] for d in response.json()["error"]["details"]}
    assert "workload.model" in details, details
    assert "model_type is 'mistral', not 'llama'" in details["workload.model"]
    assert "a bundled model, one of" in details["workload.model"]

    body["workload"]["model"] = str(good)
    response = httpx.post(f"{server.api}/studies", json=body)
    assert response.status_code == 201, response.text
    spec = StudySpec.model_validate(response.json()["spec"])
    trial = TrialConfig(**spec.complete_trial_config({"lr": 0.01}))
    assert trial.model == str(good) and trial.model_sha256 == sha256(good)
    assert math.isclose(trial.lr, 0.01)
