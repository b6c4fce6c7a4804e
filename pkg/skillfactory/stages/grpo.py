"""Stage 3 in one process: a sampler thread and the learner, overlapping through a queue.

The sampler (`skillfactory.train.sampler`) admits prompts under the staleness bound, samples and
grades groups with the engine and queues them; the learner (this thread) pulls groups, trains a
step on every `prompts_per_step` accepted ones, hands the new weights to the engine in process
(`load_weights`, between two generate calls) and checkpoints every `save_steps`.

Outputs under `<output_dir>/<run>/grpo/`: `checkpoints/step-<v>/` (model, optimizer, scheduler,
RNG, counters), `steps.jsonl` (one line per step: version, loss, reward, staleness, the group ids
trained), `model/` (the final HF model folder) and `summary.json`. A re-run resumes from the
latest checkpoint: the version sequence continues, the steps after it (never checkpointed, so
undone) are dropped from `steps.jsonl`, and prompts already trained are never drawn again.
Queue entries are acked only once a checkpoint covers them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from skillfactory.engines.base import Engine, SamplingParams
from skillfactory.engines.setup import engine_batch_rows
from skillfactory.group import Group
from skillfactory.queue import Queue, open_queue, read_messages
from skillfactory.runspec import RunSpec
from skillfactory.stages.data import derived_seed
from skillfactory.stages.rollouts import Cluster, EmbeddedRollouts, RemoteRollouts, Rollouts
from skillfactory.tasks import get_task
from skillfactory.train.ranks import LeaderLearner, leader
from skillfactory.train.sampler import (
    GROUPS_STREAM,
    PromptStream,
    Score,
    correctness_reward,
    too_long,
)
from skillfactory.train.staleness import AdmissionController
from skillfactory.v1 import data_pb2

STEPS_FILE = "steps.jsonl"
SUMMARY_FILE = "summary.json"
LEARNER_GROUP = "learner"
LEARNER_ID = "learner-0"


def grpo_dir(spec: RunSpec) -> Path:
    """Where stage 3 of this run writes."""
    return Path(spec.output_dir) / spec.name / "grpo"


def grpo_task_name(spec: RunSpec) -> str:
    """The task of the RL prompts: the GRPO section's, else the data stage's."""
    return spec.grpo.task or spec.data.task


def rollout_params(spec: RunSpec) -> SamplingParams:
    """Sampling of GRPO rollouts: the spec's temperature/top-p, no penalty, group_size samples."""
    return SamplingParams(
        n=spec.grpo.group_size,
        temperature=spec.grpo.temperature,
        top_p=spec.grpo.top_p,
        max_tokens=spec.grpo.max_response_length,
    )


class StalledRun(RuntimeError):
    """The learner refused every group for a long time: nothing can train."""

    def __init__(self, refused: int, counters: Any) -> None:
        super().__init__(
            f"the learner refused the last {refused} groups (too stale: "
            f"{counters.dropped_stale}, zero reward variance: {counters.dropped_zero_variance} in "
            "all): with grpo.filter_zero_variance on, a model that is always right or always wrong "
            "yields no group to train on; turn the filter off or start from a stronger model"
        )


def max_refused_in_a_row(spec: RunSpec) -> int:
    """Groups refused in a row after which the run stops as stalled (20 steps' worth)."""
    return max(256, 20 * spec.grpo.prompts_per_step)


def keep_steps_up_to(path: Path, version: int) -> int:
    """Drop the lines of `steps.jsonl` past `version` (undone by a resume); returns how many."""
    if not path.exists():
        return 0
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    kept = [line for line in lines if json.loads(line)["version"] <= version]
    path.write_text("".join(line + "\n" for line in kept))
    return len(lines) - len(kept)


class GRPOStage:
    """Runs stage 3 of a spec from `model` (a local HF folder) with an engine on the same model."""

    def __init__(
        self,
        spec: RunSpec,
        model: str | Path,
        engine_factory: Callable[[str], Engine],
        *,
        queue: Queue | None = None,
        out: Path | None = None,
        score: Score | None = None,
        cluster: Cluster | None = None,
    ) -> None:
        self.spec = spec
        self.model_path = str(model)
        self.engine_factory = engine_factory
        self.cluster = cluster
        self.queue = queue or open_queue(cluster.queue if cluster is not None else spec.queue)
        self.out = out or grpo_dir(spec)
        self.seed = derived_seed(spec.seed, "grpo")
        self.task = get_task(grpo_task_name(spec))
        self.score = score or correctness_reward(self.task)
        self.duplicates = 0
        """Groups dropped because their prompt was already trained on or waiting (a reclaimed
        rollout task's second group)."""

    def build_learner(self) -> Any:
        """The learner on the model, resumed from the latest checkpoint when there is one."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from skillfactory.train.learner import GRPOLearner, latest_checkpoint

        torch.manual_seed(self.seed)
        tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        model: Any = AutoModelForCausalLM.from_pretrained(self.model_path, dtype=torch.float32)
        model.to(device)
        ref: Any = None
        if self.spec.grpo.kl_beta > 0:
            ref = AutoModelForCausalLM.from_pretrained(self.model_path, dtype=torch.float32)
            ref.to(device)
            ref.eval().requires_grad_(False)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        learner = GRPOLearner(model, self.spec.grpo, pad_token_id=pad, ref_model=ref)
        self.tokenizer = tokenizer
        checkpoint = latest_checkpoint(self.out / "checkpoints")
        if checkpoint is not None:
            learner.load_checkpoint(checkpoint)
        return learner

    def wanted(
        self, group: Group, rollouts: Rollouts, learner: Any, waiting: list[tuple[str, Group]]
    ) -> bool:
        """Whether a queued group may be considered at all: asked for by this learner, and its
        prompt neither trained on nor already waiting."""
        if not rollouts.owns(group):
            return False
        index = group.prompt_index
        if learner.is_done(index) or any(g.prompt_index == index for _, g in waiting):
            self.duplicates += 1
            return False
        return True

    def split_cores(self) -> tuple[int | None, int | None]:
        """Torch threads of the sampler and the learner. When they overlap on a CPU
        (`max_staleness > 0`) the cores are split between them, so that two thread teams do not
        fight over the same cores; synchronous runs take turns and keep the default."""
        import torch

        cores = torch.get_num_threads()
        if self.spec.grpo.max_staleness == 0 or torch.cuda.is_available() or cores < 2:
            return None, None
        return cores // 2, cores - cores // 2

    def run(self, on_step: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Train until `grpo.steps` versions exist; returns the summary."""
        spec = self.spec.grpo
        started = time.perf_counter()
        self.out.mkdir(parents=True, exist_ok=True)
        ranks = leader()
        if ranks is not None:
            ranks.tell("grpo", self.spec.model_dump_json(), self.model_path, str(self.out))
        learner = self.build_learner()
        if ranks is not None:
            learner = LeaderLearner(learner, ranks, self.spec.name)
        resumed_from = learner.version
        rolled_back = keep_steps_up_to(self.out / STEPS_FILE, learner.version)
        problems = self.task.problems(spec.num_problems, seed=self.seed)
        admission = AdmissionController(
            spec.prompts_per_step,
            spec.max_staleness,
            version=learner.version,
            accepted=learner.counters.groups_trained,
            limit=spec.steps * spec.prompts_per_step,
        )
        prompts = PromptStream(problems, skip=learner.is_done)
        sampler_threads, learner_threads = self.split_cores()
        if self.cluster is None:
            rollouts: Rollouts = EmbeddedRollouts(
                self.spec,
                self.engine_factory(self.model_path),
                self.score,
                prompts,
                admission,
                self.queue,
                learner=learner,
                prompts_per_call=max(1, min(spec.prompts_per_step, engine_rows(self.spec))),
                seed=self.seed,
                threads=sampler_threads,
            )
        else:
            restart_leftovers(self.queue)
            rollouts = RemoteRollouts(
                self.spec,
                self.cluster,
                self.model_path,
                prompts,
                admission,
                self.queue,
                learner=learner,
            )
            learner_threads = None
        restore_threads = set_threads(learner_threads)
        rollouts.start()
        steps_log = (self.out / STEPS_FILE).open("a")
        wait_seconds = 0.0
        refused_in_a_row = 0
        try:
            waiting: list[tuple[str, Group]] = []
            unacked: list[str] = []
            while learner.version < spec.steps:
                waited = time.perf_counter()
                entries = self.queue.get(GROUPS_STREAM, LEARNER_GROUP, LEARNER_ID, 64, 0.2)
                wait_seconds += time.perf_counter() - waited
                if rollouts.error is not None:
                    raise RuntimeError("the sampler failed") from rollouts.error
                for entry, message in read_messages(entries, data_pb2.Group):
                    group = Group.from_proto(message)
                    if not self.wanted(group, rollouts, learner, waiting):
                        self.queue.ack(GROUPS_STREAM, LEARNER_GROUP, [entry.id])
                        continue
                    accepted = not too_long(group, spec.max_prompt_length) and learner.accepts(
                        group
                    )
                    admission.on_group_done(accepted)
                    refused_in_a_row = 0 if accepted else refused_in_a_row + 1
                    if refused_in_a_row > max_refused_in_a_row(self.spec):
                        raise StalledRun(refused_in_a_row, learner.counters)
                    if accepted:
                        waiting.append((entry.id, group))
                    else:
                        unacked.append(entry.id)
                while len(waiting) >= spec.prompts_per_step and learner.version < spec.steps:
                    batch, waiting = (
                        waiting[: spec.prompts_per_step],
                        waiting[spec.prompts_per_step :],
                    )
                    metrics = learner.train_step([g for _, g in batch])
                    synced = time.perf_counter()
                    rollouts.publish(learner)
                    admission.on_version(learner.version)
                    record = {
                        **metrics.to_dict(),
                        "weight_sync_seconds": time.perf_counter() - synced,
                        "dropped_stale": learner.counters.dropped_stale,
                        "dropped_zero_variance": learner.counters.dropped_zero_variance,
                        "duplicate_groups": self.duplicates,
                        "queue": queue_levels(self.queue),
                    }
                    steps_log.write(json.dumps(record) + "\n")
                    steps_log.flush()
                    unacked += [entry_id for entry_id, _ in batch]
                    if learner.version % spec.save_steps == 0 or learner.version == spec.steps:
                        learner.save_checkpoint(self.out / "checkpoints")
                        self.queue.ack(GROUPS_STREAM, LEARNER_GROUP, unacked)
                        unacked = []
                    if on_step is not None:
                        on_step(record)
            final_weights = learner.weights()
        finally:
            admission.close()
            rollouts.close()
            steps_log.close()
            set_threads(restore_threads)
            if ranks is not None:
                ranks.tell("end")
        learner.model.save_pretrained(self.out / "model", state_dict=final_weights)
        self.tokenizer.save_pretrained(self.out / "model")
        summary = {
            "steps": learner.version,
            "resumed_from_version": resumed_from,
            "steps_rolled_back": rolled_back,
            "groups_sampled": rollouts.groups_asked,
            "duplicate_groups": self.duplicates,
            "learner_wait_seconds": round(wait_seconds, 2),
            "wall_seconds": round(time.perf_counter() - started, 2),
            "learner_ranks": learner.world_size,
            **{k: v for k, v in asdict(learner.counters).items() if k != "done_prompts"},
        }
        (self.out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
        return summary


def restart_leftovers(queue: Queue) -> int:
    """Ack the groups a previous learner took and never trained on (not covered by a checkpoint);
    their prompts are asked for again. Returns how many."""
    dropped = 0
    while entries := queue.reclaim(GROUPS_STREAM, LEARNER_GROUP, LEARNER_ID, 0.0, 1000):
        queue.ack(GROUPS_STREAM, LEARNER_GROUP, [entry.id for entry in entries])
        dropped += len(entries)
    return dropped


def queue_levels(queue: Queue) -> dict[str, dict[str, int]]:
    """Depth (not yet delivered) and pending (delivered, not acked) of the GRPO streams."""
    from skillfactory.train.rollout_task import PROMPTS_STREAM, SAMPLERS_GROUP

    levels = {}
    for stream, group in ((GROUPS_STREAM, LEARNER_GROUP), (PROMPTS_STREAM, SAMPLERS_GROUP)):
        try:
            levels[stream] = {
                "depth": queue.depth(stream, group),
                "pending": queue.pending(stream, group),
            }
        except Exception:  # a stream nobody created yet (embedded mode has no prompts stream)
            continue
    return levels


def set_threads(threads: int | None) -> int | None:
    """Set this thread's torch threads; returns the previous count (None: nothing changed)."""
    if threads is None:
        return None
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    return previous


def engine_rows(spec: RunSpec) -> int:
    """Prompts per generate call that fill the engine's batch (rows / group size)."""
    rows = engine_batch_rows(spec.engine)
    return max(1, rows // spec.grpo.group_size)
