"""The ablation suite: a suite file expands to one valid run spec per variant, with the base's
seeds; stage 1's samples pass from one variant to the next of the same base."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from skillfactory.ablation import (
    VARIANTS,
    InvalidSuite,
    base_key,
    expand_suite,
    load_suite,
    parse_suite,
    share_stage1,
    variant_of,
    write_specs,
)
from skillfactory.runspec import RunSpec, load_run_spec
from skillfactory.stages.data import SAMPLES_FILE, SUMMARY_FILE, data_dir

REPO = Path(__file__).resolve().parents[2]
SUITES = sorted(
    path
    for path in (REPO / "examples").glob("**/*.yaml")
    if "variants" in (yaml.safe_load(path.read_text()) or {})
)


def test_the_paper_suite_is_shipped() -> None:
    assert REPO / "examples" / "paper" / "ablations.yaml" in SUITES


@pytest.mark.parametrize("path", SUITES, ids=lambda p: p.name)
def test_each_shipped_suite_expands_to_valid_specs_with_the_base_seeds(
    path: Path, tmp_path: Path
) -> None:
    suite, base = load_suite(path)
    specs = expand_suite(suite, base)
    assert [spec.name for spec in specs] == [variant.name for variant in suite.variants]
    assert {spec.output_dir for spec in specs} == {str(Path(base.output_dir) / suite.name)}
    for spec in specs:
        assert (spec.seed, spec.data.seed) == (base.seed, base.data.seed)
    keys = {base_key(spec.model_dump(mode="json")) for spec in specs}
    assert keys == {base_key(base.model_dump(mode="json"))}, "variants differ only as variants"
    for written in write_specs(specs, tmp_path):
        assert isinstance(load_run_spec(written), RunSpec)


def test_the_paper_suite_holds_the_paper_variants() -> None:
    suite, base = load_suite(REPO / "examples" / "paper" / "ablations.yaml")
    specs = expand_suite(suite, base)
    assert [variant_of(s.model_dump(mode="json")) for s in specs] == [
        "rl-only",
        "star",
        "skillfactory",
        "no-sample-order",
        "no-reflection",
        "no-prompt-diversity",
        "fixed-length",
    ]
    by_name = {spec.name: spec for spec in specs}
    assert by_name["rl-only"].baseline == "rl-only"
    assert by_name["no-reflection"].data.composition == "no-reflection"
    assert by_name["skillfactory"].model_dump(exclude={"name", "output_dir"}) == base.model_dump(
        exclude={"name", "output_dir"}
    )


def write_suite(tmp_path: Path, suite: dict) -> Path:
    (tmp_path / "base.yaml").write_text(
        "name: base\nmodel: tiny\nseed: 7\noutput_dir: out\ndata: {task: countdown-3, seed: 3}\n"
    )
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "base": "base.yaml", **suite}))
    return path


def test_overrides_merge_base_then_suite_then_variant(tmp_path: Path) -> None:
    path = write_suite(
        tmp_path,
        {
            "overrides": {"eval": {"num_problems": 5}, "data": {"num_problems": 9}},
            "variants": [
                "no-reflection",
                {"name": "cc", "overrides": {"data": {"composition": "released-cc"}}},
            ],
        },
    )
    suite, base = load_suite(path)  # the base is found relative to the suite file
    first, second = expand_suite(suite, base)
    assert (first.name, first.data.composition) == ("no-reflection", "no-reflection")
    assert (second.name, second.data.composition) == ("cc", "released-cc")
    for spec in (first, second):
        assert (spec.eval.num_problems, spec.data.num_problems, spec.data.task) == (
            5,
            9,
            "countdown-3",
        )
        assert (spec.seed, spec.data.seed, spec.output_dir) == (7, 3, str(Path("out") / "s"))


@pytest.mark.parametrize(
    ("suite", "message"),
    [
        ({"variants": ["no-such-variant"]}, "unknown variant 'no-such-variant'"),
        ({"variants": ["star", "star"]}, "repeated: star"),
        ({"variants": []}, "variants"),
        ({"variants": ["star"], "colour": 1}, "unknown field"),
        ({"variants": [{"name": "x", "overrides": {"seed": 1}}]}, "x sets seed"),
        ({"variants": ["star"], "overrides": {"data": {"seed": 1}}}, "overrides sets data.seed"),
        ({"variants": [{"name": "x", "overrides": {"data": {"tsk": 1}}}]}, "data.tsk"),
    ],
)
def test_a_bad_suite_names_the_problem(tmp_path: Path, suite: dict, message: str) -> None:
    with pytest.raises(InvalidSuite, match=message.replace(".", r"\.")):
        loaded, base = load_suite(write_suite(tmp_path, suite))
        expand_suite(loaded, base)


def test_a_missing_base_is_named(tmp_path: Path) -> None:
    path = tmp_path / "suite.yaml"
    path.write_text("name: s\nbase: nowhere.yaml\nvariants: [star]\n")
    with pytest.raises(InvalidSuite, match="nowhere.yaml"):
        load_suite(path)


def test_every_named_variant_validates() -> None:
    suite = parse_suite({"name": "all", "base": "-", "variants": list(VARIANTS)})
    specs = expand_suite(suite, RunSpec())
    assert [variant_of(s.model_dump(mode="json")) for s in specs] == list(VARIANTS)


def test_stage1_samples_pass_to_the_next_variant_of_the_same_base(tmp_path: Path) -> None:
    path = write_suite(tmp_path, {"variants": ["rl-only", "skillfactory", "no-reflection", "star"]})
    suite, base = load_suite(path)
    specs = [
        s.model_copy(update={"output_dir": str(tmp_path / s.output_dir)})
        for s in expand_suite(suite, base)
    ]
    rl_only, method, ablation, star = specs
    assert share_stage1(method, [rl_only]) is None  # nothing sampled yet
    folder = data_dir(method)
    folder.mkdir(parents=True)
    (folder / SAMPLES_FILE).write_text('{"id": "p1", "samples": []}\n')
    assert share_stage1(ablation, [rl_only, method]) is None  # stage 1 not finished
    (folder / SUMMARY_FILE).write_text("{}")
    assert share_stage1(ablation, [rl_only, method]) == folder
    assert (data_dir(ablation) / SAMPLES_FILE).read_text() == (folder / SAMPLES_FILE).read_text()
    assert share_stage1(ablation, [method]) is None  # it has samples of its own now
    assert share_stage1(rl_only, [method]) is None  # no stage 1
    other_seed = star.model_copy(update={"seed": 1})
    assert share_stage1(other_seed, [method]) is None  # another base
    assert share_stage1(star, [method]) == folder
