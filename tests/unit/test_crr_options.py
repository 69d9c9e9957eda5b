"""CRR's option groups: dataclasses or dicts, the flat names of earlier releases, old checkpoints, the CLI."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from anomalib_repair import CRR
from anomalib_repair.errors import BadInputError
from anomalib_repair.models.crr import StageIIOptions, StageIOptions
from anomalib_repair.models.crr.options import GROUPS, LEGACY_NAMES, group_flat_arguments, parser_error_hint
from tiny_models import TINY_CLI_ARGS, tiny_crr

ROOT = Path(__file__).resolve().parents[2]
LITE: dict[str, Any] = {
    "backbone": "tf_efficientnet_lite0.pypi",
    "pre_trained": False,
    "layers": ["blocks.2", "blocks.4"],
    "embed_dim": 64,
    "image_size": 64,
    "crop_size": 64,
    "visualizer": False,
}
GROUPED: dict[str, Any] = {
    "stage1": {"steps": 5, "decoder_depth": 2, "lr": 1e-3},
    "stage2": {"steps": 3, "size": None, "base_width": 8, "lr": 5e-4},
    "synthesis": {"foreground": "off"},
    "scoring": {"rec_weight": 0.5},
}
FLAT: dict[str, Any] = {
    "stage1_steps": 5, "decoder_depth": 2, "lr": 1e-3, "stage2_steps": 3, "seg_size": None, "seg_base_width": 8,
    "seg_lr": 5e-4, "foreground": "off", "rec_weight": 0.5,
}  # fmt: skip


def _seeded(**kwargs: Any) -> CRR:
    torch.manual_seed(0)
    return CRR(**LITE, **kwargs)


def _assert_same_state(first: CRR, second: CRR) -> None:
    ours, theirs = first.state_dict(), second.state_dict()
    assert ours.keys() == theirs.keys()
    for key, value in ours.items():
        assert torch.equal(value, theirs[key]) or (value.isnan().all() and theirs[key].isnan().all()), key


def _flat_arguments(model: CRR) -> dict[str, Any]:
    """The hyperparameters an earlier release saved for this configuration: every option under its flat name."""
    flat = {key: value for key, value in model.hparams.items() if key not in GROUPS}
    flat.update({name: model.hparams[group][option] for name, (group, option) in LEGACY_NAMES.items()})
    return flat


def test_groups_are_dataclasses_or_partial_dicts_and_are_saved_as_plain_dicts(tmp_path):
    from_dicts = _seeded(**GROUPED)
    from_classes = _seeded(
        stage1=StageIOptions(steps=5, decoder_depth=2, lr=1e-3),
        stage2=StageIIOptions(steps=3, size=None, base_width=8, lr=5e-4),
        synthesis={"foreground": "off"},
        scoring={"rec_weight": 0.5},
    )
    assert from_dicts.hparams == from_classes.hparams
    _assert_same_state(from_dicts, from_classes)
    hparams = from_dicts.hparams
    assert hparams["stage1"] == dataclasses.asdict(StageIOptions(steps=5, decoder_depth=2, lr=1e-3))  # all options
    assert hparams["stage1"]["warmup_steps"] == 100 and hparams["stage2"]["init"] == "reference"  # defaults kept
    assert all(type(hparams[group]) is dict for group in GROUPS)
    assert from_dicts.stage1 == StageIOptions(steps=5, decoder_depth=2, lr=1e-3)
    assert len(from_dicts.model.decoder) == 2 and from_dicts.model.rec_weight == 0.5 and from_dicts.total_steps == 8
    torch.save(dict(hparams), tmp_path / "hparams.pt")  # what a checkpoint holds loads in safe mode
    assert torch.load(tmp_path / "hparams.pt", weights_only=True) == dict(hparams)
    assert CRR(**hparams).hparams == hparams
    assert CRR(**LITE).hparams["stage2"] == dataclasses.asdict(StageIIOptions())  # no group given: the defaults


def test_flat_names_of_earlier_releases_build_the_same_model_with_one_deprecation_line():
    assert sorted(LEGACY_NAMES.values()) == sorted(
        (group, field.name) for group, options in GROUPS.items() for field in dataclasses.fields(options)
    )  # every option of every group has exactly one flat name
    grouped = _seeded(**GROUPED)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        flat = _seeded(**FLAT)
    deprecations = [str(w.message) for w in caught if issubclass(w.category, FutureWarning) and "CRR" in str(w.message)]
    assert len(deprecations) == 1 and "\n" not in deprecations[0]
    assert "stage1_steps -> stage1.steps" in deprecations[0] and "seg_lr -> stage2.lr" in deprecations[0]
    assert caught[0].filename == __file__  # points at the caller
    assert flat.hparams == grouped.hparams and not set(FLAT) & set(flat.hparams)
    _assert_same_state(flat, grouped)
    with pytest.raises(TypeError, match="unexpected keyword argument 'stage_one_steps'"):
        CRR(**LITE, stage_one_steps=5)
    with pytest.raises(TypeError, match=r"stage1_steps and stage1\.steps"):
        CRR(**LITE, stage1={"steps": 4}, stage1_steps=5)


def test_a_checkpoint_with_the_flat_arguments_of_an_earlier_release_adopts_its_configuration(caplog):
    trained = _seeded(**GROUPED)
    checkpoint = {"hyper_parameters": _flat_arguments(trained)}
    assert group_flat_arguments(checkpoint["hyper_parameters"]) == dict(trained.hparams)

    model = CRR(**LITE)  # the defaults: an 8-block decoder, a 256 px segmentation output
    with caplog.at_level(logging.WARNING):
        differing = model.adopt_checkpoint_configuration(checkpoint)
    assert set(differing) == {"stage1", "stage2", "synthesis", "scoring"}
    line = next(r.getMessage() for r in caplog.records if "rebuilt as saved" in r.getMessage())
    assert "stage1.decoder_depth=2 (given 8)" in line and "stage2.size=None (given 256)" in line
    assert "stage1.warmup_steps" not in line  # only the options that differ
    assert model.hparams == trained.hparams
    assert model.stage1 == trained.stage1 and model.synthesis.foreground == "off" and model.total_steps == 8
    model.load_state_dict(trained.state_dict())  # same network: every weight fits

    same = CRR(**LITE, **GROUPED)
    assert same.adopt_checkpoint_configuration(checkpoint) == {}  # same configuration: nothing rebuilt


def test_group_checks_are_one_line_errors():
    for bad, needle in (
        ({"stage1": {"steps": 0}}, "stage1.steps must be >= 1, got 0."),
        ({"stage2": {"steps": -1}}, "stage2.steps must be >= 0, got -1."),
        ({"stage1": {"batch_size": 0}}, "stage1.batch_size must be >= 1 or None (whole batch), got 0."),
        ({"synthesis": {"foreground": "object"}}, "synthesis.foreground must be 'auto' or 'off', got 'object'."),
        ({"stage2": {"init": "xavier"}}, "stage2.init must be one of reference, pytorch, got 'xavier'."),
        ({"scoring": {"sigma": 4, "weight": 1}}, "scoring has no option 'weight'"),
        ({"stage1": 5}, "stage1 must be a StageIOptions, a dict of its options or None, got int."),
    ):
        with pytest.raises(BadInputError) as error:
            CRR(**LITE, **bad)
        assert needle in str(error.value) and "\n" not in str(error.value)


def test_anomalibs_cli_parser_takes_group_options_from_the_command_line_and_yaml(tmp_path, demo_root):
    from anomalib.cli.cli import AnomalibCLI

    recipe = yaml.safe_load((ROOT / "configs" / "crr" / "cpu_reduced.yaml").read_text())
    recipe["model"]["init_args"].update({"embed_dim": 64, "image_size": 64, "crop_size": 64, "pre_trained": False})
    recipe["data"]["init_args"]["root"] = str(demo_root)
    recipe["trainer"]["default_root_dir"] = str(tmp_path)
    config = tmp_path / "crr.yaml"
    config.write_text(yaml.safe_dump(recipe))
    args = [
        "fit", "--config", str(config), "--model.stage1.steps", "7", "--model.stage2.lr", "0.01",
        "--model.synthesis", "{texture_dir: null}", "--model.scoring.top_ratio=0.05",
    ]  # fmt: skip
    cli = AnomalibCLI(args=args, run=False)
    model = cli.model
    assert isinstance(model, CRR)
    assert model.stage1 == StageIOptions(steps=7, batch_size=16, warmup_steps=10, hard_mining_ramp=30, decoder_depth=4)
    assert model.stage2 == StageIIOptions(steps=40, batch_size=8, base_width=8, size=None, lr=0.01)
    assert model.synthesis.texture_dir is None and model.scoring.top_ratio == 0.05
    assert all(type(model.hparams[group]) is dict for group in GROUPS)

    # the tiny CLI arguments of the CLI tests build the tiny model of the Python tests
    data = ["--data", "anomalib_repair.MVTecFolder", "--data.root", str(demo_root), "--default_root_dir", str(tmp_path)]
    tiny = AnomalibCLI(args=["fit", "--model", "anomalib_repair.CRR", *TINY_CLI_ARGS["CRR"], *data], run=False).model
    assert tiny.hparams == tiny_crr().hparams


def test_inside_anomalibs_cli_flat_names_and_a_nested_null_are_one_line_hints():
    """The real CLI process (``main`` of anomalib's CLI is the program's): refusals become one line, exit code 2."""
    cases = [
        ["fit", "--model", "anomalib_repair.CRR", "--model.stage1_steps", "5"],
        ["fit", "--model", "anomalib_repair.CRR", "--model.stage2.size=null"],
        ["fit", "--model", "anomalib_repair.CRAS", "--model.stage1_steps", "5"],  # not CRR: jsonargparse's own
    ]
    code = (
        "import sys, json\n"
        "from anomalib.cli.cli import main\n"  # what anomalib's console script does in __main__
        f"for args in json.loads({json.dumps(cases)!r}):\n"
        "    sys.argv = ['anomalib', *args]\n"
        "    sys.stderr.write('@@case\\n')\n"
        "    try:\n"
        "        main()\n"
        "    except SystemExit as stop:\n"
        "        sys.stderr.write(f'@@code {stop.code}\\n')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600, check=False, cwd=ROOT
    )
    outputs = done.stderr.split("@@case\n")[1:]
    assert len(outputs) == len(cases), done.stderr[-3000:]
    for output in outputs[:2]:
        lines = [line for line in output.splitlines() if line.startswith("error:") or line.startswith("@@code")]
        assert lines[-1] == "@@code 2" and len(lines) == 2, output[-2000:]
        assert "usage:" not in output and "Given value" not in output, output[-2000:]
    assert "error: CRR's options are grouped now: stage1_steps -> stage1.steps" in outputs[0]
    assert "write --model.stage2 '{size: null}' instead" in outputs[1]
    assert "Option 'stage1_steps' is not accepted" in outputs[2] and "grouped now" not in outputs[2]


def test_the_hint_names_every_flat_name_of_an_old_recipe():
    refused = (
        'error: Parser key "model":\n  Does not validate against any of the Union subtypes\n  Errors:\n'
        "    - Problem with given class_path 'anomalib_repair.CRR':\n        Option 'decoder_depth' is not accepted\n"
        "  Given value type: <class 'dict'>\n  Given value: {'class_path': 'anomalib_repair.CRR', 'init_args': "
        "{'backbone': 'x', 'seg_size': None, 'stage1_steps': 100, 'texture_dir': 'a', 'image_size': 128}}"
    )
    hint = parser_error_hint(refused)
    assert hint is not None and "\n" not in hint
    for old, new in (("decoder_depth", "stage1.decoder_depth"), ("seg_size", "stage2.size"),
                     ("stage1_steps", "stage1.steps"), ("texture_dir", "synthesis.texture_dir")):  # fmt: skip
        assert f"{old} -> {new}" in hint
    assert "backbone" not in hint and "image_size" not in hint
    assert parser_error_hint(refused.replace("anomalib_repair.CRR", "anomalib_repair.CRAS")) is None
    assert parser_error_hint("error: Option 'nope' is not accepted (CRR)") is None
