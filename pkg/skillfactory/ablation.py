"""The ablation suite: the method and its named variants, each run as data → SFT → GRPO → eval from
one base run spec with the same seeds, so that `skillfactory report` lays their runs out like the
paper's tables (one row per variant and model).

A suite file (YAML) names a base spec and the variants:

    name: paper-countdown-ablations       # folder of the suite's runs: <output_dir>/<name>/
    base: ../paper-countdown.yaml         # a run spec; a relative path is relative to this file
    overrides: {eval: {num_problems: 100}}  # optional: applied to every variant
    variants:                             # names of VARIANTS, or {name, overrides}
      - rl-only
      - star
      - skillfactory
      - no-reflection
      - name: cc-only
        overrides: {data: {composition: released-cc}}

`expand_suite` turns it into one run spec per variant: the base, then the suite's overrides, then
the variant's (mappings merge key by key), named after the variant and writing to
`<output_dir>/<suite name>/<variant>/`. Every variant keeps the base's seeds: overrides may not set
`seed` or `data.seed`, so the variants differ only in what they ablate.

Stage 1's samples (solutions, grades, reflections) do not depend on the composition, so
`share_stage1` hands a finished variant's `samples.jsonl` to the next variant of the same base:
its stage 1 then only composes (the data stage skips chunks already sampled), and the variants
are built from the very same samples, as in the paper's ablations.

The report needs no suite file: runs whose specs are equal but for what a variant changes
(`VARIANT_FIELDS`) are variants of one base (`base_key`), named by `variant_of` and ordered by
`PAPER_ORDER`.

This module imports no torch.
"""

from __future__ import annotations

import copy
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import Field, ValidationError, field_validator

from skillfactory.runspec import (
    Composition,
    InvalidRunSpec,
    RunSpec,
    Spec,
    dump_run_spec,
    load_run_spec,
    parse_run_spec,
    problems_of,
)
from skillfactory.stages.data import SAMPLES_FILE, SUMMARY_FILE, data_dir

BASELINE_VARIANTS: dict[str, dict[str, Any]] = {
    "rl-only": {"baseline": "rl-only"},
    "star": {"baseline": "star"},
}
"""Run-level baselines by name. `distill` needs a dataset of one's own: write it as a variant with
overrides `{baseline: distill, sft: {dataset: …}}`."""
ABLATIONS = ("no-sample-order", "no-reflection", "no-prompt-diversity", "fixed-length")
"""Stage-1 ablations of the paper (trace compositions)."""
RELEASED = tuple(c for c in get_args(Composition) if c.startswith("released-"))
"""The released code's formats (trace compositions)."""

VARIANTS: dict[str, dict[str, Any]] = {
    **BASELINE_VARIANTS,
    "skillfactory": {},
    **{name: {"data": {"composition": name}} for name in (*ABLATIONS, *RELEASED)},
}
"""Every variant a suite may name, with the spec overrides it stands for."""

PAPER_ORDER: tuple[str, ...] = ("rl-only", "star", "distill", "skillfactory", *ABLATIONS, *RELEASED)
"""Row order of the report: the baselines, the method, its ablations, then the released formats.
Other variants follow in the order given."""

VARIANT_FIELDS: tuple[tuple[str, ...], ...] = (
    ("name",),
    ("output_dir",),
    ("reuse_from",),
    ("baseline",),
    ("data", "composition"),
    ("sft", "dataset"),
)
"""Spec fields that variants of one base may differ in (and the run's name and folder)."""

SEED_FIELDS: tuple[tuple[str, ...], ...] = (("seed",), ("data", "seed"))
"""Where a spec holds seeds; a suite's overrides may set none of them."""


class VariantSpec(Spec):
    """One variant of a suite: a name and the spec overrides it applies to the base."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    """The variant's name; names its run (letters, digits, . _ -)."""
    overrides: dict[str, Any] = Field(default_factory=dict)
    """Run-spec fields (nested mappings) that make this variant; none for a name of VARIANTS
    uses that variant's own."""


class SuiteSpec(Spec):
    """An ablation suite: a base run spec and the variants run from it."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    """The suite's name: its runs go to `<output_dir>/<name>/<variant>/`."""
    base: str
    """The base run spec (YAML); a relative path is relative to the suite file."""
    overrides: dict[str, Any] = Field(default_factory=dict)
    """Run-spec fields applied to every variant (before the variant's own)."""
    variants: list[VariantSpec] = Field(min_length=1)
    """The variants: names of `skillfactory.ablation.VARIANTS`, or {name, overrides}."""

    @field_validator("variants", mode="before")
    @classmethod
    def _named_variants(cls, value: Any) -> Any:
        if not isinstance(value, list):
            return value
        return [_named_variant(item) for item in value]

    @field_validator("variants")
    @classmethod
    def _distinct_names(cls, value: list[VariantSpec]) -> list[VariantSpec]:
        names = [variant.name for variant in value]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"variant names must be distinct; repeated: {', '.join(repeated)}")
        return value


def _named_variant(item: Any) -> Any:
    if isinstance(item, str):
        if item not in VARIANTS:
            raise ValueError(
                f"unknown variant {item!r}; allowed names: {', '.join(VARIANTS)} "
                "(or a mapping {name, overrides})"
            )
        return {"name": item, "overrides": VARIANTS[item]}
    if isinstance(item, dict) and "overrides" not in item and item.get("name") in VARIANTS:
        return {**item, "overrides": VARIANTS[item["name"]]}
    return item


class InvalidSuite(ValueError):
    """A suite file that does not validate, or a variant whose run spec does not."""


def parse_suite(data: Any, source: str = "suite") -> SuiteSpec:
    """Validate a mapping (parsed YAML) as a suite, raising `InvalidSuite` naming the fields."""
    if not isinstance(data, dict):
        raise InvalidSuite(f"{source} is invalid:\n  <root>: expected a mapping (got {data!r})")
    try:
        return SuiteSpec.model_validate(data)
    except ValidationError as error:
        lines = "\n".join(f"  {problem}" for problem in problems_of(error))
        raise InvalidSuite(f"{source} is invalid:\n{lines}") from None


def load_suite(path: str | Path) -> tuple[SuiteSpec, RunSpec]:
    """Read a suite file and its base spec (relative to the suite file)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise InvalidSuite(f"{path}: {error}") from None
    suite = parse_suite(data, str(path))
    base_path = Path(suite.base)
    if not base_path.is_absolute():
        base_path = path.parent / base_path
    if not base_path.is_file():
        raise InvalidSuite(f"{path}: base: no such run spec {str(base_path)!r}")
    try:
        base = load_run_spec(base_path)
    except InvalidRunSpec as error:
        raise InvalidSuite(str(error)) from None
    return suite, base


def expand_suite(suite: SuiteSpec, base: RunSpec) -> list[RunSpec]:
    """One run spec per variant, in the suite's order: base ← suite overrides ← variant overrides,
    named after the variant, under `<base output_dir>/<suite name>/`, with the base's seeds."""
    specs = []
    base_data = base.model_dump(mode="json")
    output_dir = str(Path(base.output_dir) / suite.name)
    for variant in suite.variants:
        for where, overrides in (("overrides", suite.overrides), (variant.name, variant.overrides)):
            seeds = [".".join(path) for path in SEED_FIELDS if _get(overrides, path) is not None]
            if seeds:
                raise InvalidSuite(
                    f"suite {suite.name}: {where} sets {', '.join(seeds)}; every variant keeps "
                    "the base spec's seeds (change them in the base spec)"
                )
        data = _merge(_merge(base_data, suite.overrides), variant.overrides)
        data.update(name=variant.name, output_dir=output_dir)
        try:
            specs.append(parse_run_spec(data, f"suite {suite.name}, variant {variant.name}"))
        except InvalidRunSpec as error:
            raise InvalidSuite(str(error)) from None
    return specs


def write_specs(specs: Sequence[RunSpec], folder: Path) -> list[Path]:
    """Write each spec as `<folder>/<name>.yaml` (every field written out); returns the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for spec in specs:
        path = folder / f"{spec.name}.yaml"
        path.write_text(dump_run_spec(spec))
        paths.append(path)
    return paths


def suite_run_dirs(suite: SuiteSpec, base: RunSpec) -> list[Path]:
    """The run folders of the suite's variants, in the suite's order."""
    return [Path(spec.output_dir) / spec.name for spec in expand_suite(suite, base)]


def share_stage1(spec: RunSpec, earlier: Sequence[RunSpec]) -> Path | None:
    """Copy the stage-1 samples of the first of `earlier` that is a variant of the same base and
    finished stage 1 into `spec`'s data folder, unless `spec` has samples of its own or runs no
    stage 1; returns the folder copied from (None when nothing was copied)."""
    mine = data_dir(spec) / SAMPLES_FILE
    if mine.exists() or spec.baseline in ("rl-only", "distill") or "data" not in spec.stages:
        return None
    key = base_key(spec.model_dump(mode="json"))
    for other in earlier:
        folder = data_dir(other)
        if (
            base_key(other.model_dump(mode="json")) == key
            and (folder / SUMMARY_FILE).is_file()
            and (folder / SAMPLES_FILE).is_file()
        ):
            mine.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(folder / SAMPLES_FILE, mine)
            return folder
    return None


# reading runs back: which runs are variants of one base ---------------------------------------


def variant_of(spec: Mapping[str, Any]) -> str:
    """The variant a run spec (as `run.json` stores it) is: its baseline when it is one, else its
    stage-1 composition (`skillfactory` for the method itself)."""
    baseline = str(spec.get("baseline") or "skillfactory")
    if baseline != "skillfactory":
        return baseline
    data = spec.get("data")
    composition = data.get("composition") if isinstance(data, dict) else None
    return str(composition or "skillfactory")


def base_key(spec: Mapping[str, Any]) -> str:
    """What variants of one base have in common: the spec without `VARIANT_FIELDS`, as text."""
    data = copy.deepcopy(dict(spec))
    for path in VARIANT_FIELDS:
        _drop(data, path)
    return yaml.safe_dump(data, sort_keys=True)


def paper_rank(variant: str) -> int:
    """Position of a variant in `PAPER_ORDER` (unknown ones last)."""
    return PAPER_ORDER.index(variant) if variant in PAPER_ORDER else len(PAPER_ORDER)


def _merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(dict(base))
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _get(data: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        if not isinstance(data, Mapping):
            return None
        data = data.get(part)
    return data


def _drop(data: dict[str, Any], path: tuple[str, ...]) -> None:
    *parents, last = path
    for part in parents:
        child = data.get(part)
        if not isinstance(child, dict):
            return
        data = child
    data.pop(last, None)


__all__ = [
    "ABLATIONS",
    "BASELINE_VARIANTS",
    "PAPER_ORDER",
    "RELEASED",
    "VARIANTS",
    "VARIANT_FIELDS",
    "InvalidSuite",
    "SuiteSpec",
    "VariantSpec",
    "base_key",
    "expand_suite",
    "load_suite",
    "parse_suite",
    "paper_rank",
    "share_stage1",
    "suite_run_dirs",
    "variant_of",
    "write_specs",
]
