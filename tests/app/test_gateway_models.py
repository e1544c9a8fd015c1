"""Where the Kaggle gateway's models come from (issue 16): arguments, then ``RSNA_TUI_STAGE1_MODEL`` /
``RSNA_TUI_MODELS``, then the workspace's newest succeeded jobs (``rsna_tui.gateway``, on the job
store), and an error naming all three ways when none gives them. Real (untrained) model folders."""
from __future__ import annotations

from pathlib import Path

import pytest

from engine.inference import gateway
from engine.inference.synthetic import write_stage2_model, write_threshold_stage1_model
from rsna_tui.gateway import configure_from_workspace
from rsna_tui.jobs.store import JobRow, Store


@pytest.fixture
def models(tmp_path: Path) -> dict[str, Path]:
    out = {}
    for source in ("arg", "env", "ws"):
        out[f"{source}1"] = write_threshold_stage1_model(tmp_path / source / "s1", patch=(16, 16), spacing=(4.0, 4.0))
        out[f"{source}2"] = write_stage2_model(tmp_path / source / "f1", [4, 8], [1, 1], 8, seed=0)
    out["ws3"] = write_stage2_model(tmp_path / "ws" / "f2", [4, 8], [1, 1], 8, seed=1)
    return out


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, workspace: Path) -> pytest.MonkeyPatch:
    for key in (gateway.ENV_STAGE1, gateway.ENV_MODELS, gateway.ENV_WORKSPACE):
        monkeypatch.delenv(key, raising=False)
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):  # configure() points them at a workspace
        monkeypatch.setenv(key, str(workspace / key))
    yield monkeypatch
    gateway.reset()


def _register(workspace: Path, stage: str, model: Path) -> None:
    with Store(workspace / "jobs.db") as store:
        job = store.insert_job(JobRow(id=0, stage=stage, profile="tiny", params={}, status="succeeded", created_at=1.0))
        with store.write() as conn:
            conn.execute("INSERT INTO artefacts (job_id, name, path, t) VALUES (?, 'model', ?, 1.0)", (job.id, str(model)))


def used(predictor) -> tuple[Path, list[Path]]:
    return predictor.stage1_path, [m.path for m in predictor.models]


def test_arguments_then_variables_then_the_workspace(clean_env: pytest.MonkeyPatch, workspace: Path,
                                                     models: dict[str, Path]) -> None:
    for stage, model in (("train2d", models["ws1"]), ("finetune1", models["ws2"]), ("finetune2", models["ws3"])):
        _register(workspace, stage, model)
    assert used(configure_from_workspace(workspace, device="cpu")) == (models["ws1"], [models["ws2"], models["ws3"]])
    clean_env.setenv(gateway.ENV_STAGE1, str(models["env1"]))
    clean_env.setenv(gateway.ENV_MODELS, f"{models['env2']}, {models['ws3']}")
    assert used(configure_from_workspace(workspace, device="cpu")) == (models["env1"], [models["env2"], models["ws3"]])
    assert used(gateway.configure(device="cpu")) == (models["env1"], [models["env2"], models["ws3"]])
    assert used(configure_from_workspace(workspace, stage1_model=models["arg1"], models=[models["arg2"]],
                                         device="cpu")) == (models["arg1"], [models["arg2"]])
    clean_env.delenv(gateway.ENV_MODELS)  # each source fills only what the ones before it left out
    assert used(configure_from_workspace(workspace, device="cpu")) == (models["env1"], [models["ws2"], models["ws3"]])


def test_no_models_anywhere_names_every_way_to_give_them(clean_env: pytest.MonkeyPatch, workspace: Path,
                                                         models: dict[str, Path]) -> None:
    for call in (lambda: gateway.configure(), lambda: configure_from_workspace(workspace)):
        with pytest.raises(RuntimeError) as error:
            call()
        message = str(error.value)
        assert message.startswith("no stage-1 model for predict()")
        for way in ("configure(stage1_model=..., models=[...])", gateway.ENV_STAGE1, gateway.ENV_MODELS,
                    "rsna_tui.gateway.configure_from_workspace(workspace)"):
            assert way in message
    _register(workspace, "train2d", models["ws1"])  # stage 1 found, stage 2 still missing
    with pytest.raises(RuntimeError, match="^no stage-2 models for predict"):
        configure_from_workspace(workspace)
