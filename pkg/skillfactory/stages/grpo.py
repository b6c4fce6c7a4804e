"""Stage 3: asynchronous off-policy GRPO — samplers and the learner overlapping through a queue.

The loop reads as its parts:

    intake.pull()                       groups from the queue: considered, accepted or refused
    batch = intake.next_batch(…)        `prompts_per_step` accepted groups, in arrival order
    record = learner.train_step(batch)  one policy version (`skillfactory.train.learner`)
    publish(rollouts, learner)          the new weights to the samplers
    steps_log.write(record)             one line of `steps.jsonl`
    maybe_checkpoint(…)                 every `save_steps`: a checkpoint, then the acks it covers
    maybe_evaluate(…)                   every `eval_every`: held-out accuracy, best model kept

The samplers are a thread of this process (`EmbeddedRollouts`) or the sampler workers of rollout
services (`RemoteRollouts`, distributed mode); see `skillfactory.stages.rollouts`.

Outputs under `<output_dir>/<run>/grpo/`: `checkpoints/step-<v>/` (model, optimizer, scheduler,
RNG, counters), `steps.jsonl` (one `StepRecord` per step), `model/` (the final HF model folder)
and `summary.json`; with `grpo.eval_every`, `eval.jsonl` (one line per evaluation: version, mean
accuracy, task metrics), `evals/step-<v>/<task>.jsonl` (the graded samples) and `best/` (the model
of the best evaluation so far, its step in the summary as `best_step`). Each step's metrics, every
`tracking.completions_every` steps a table of the completions trained on, and each evaluation's
metrics go to the run's tracker (`skillfactory.tracking`). A re-run resumes from the latest checkpoint: the version sequence continues,
the steps after it (never checkpointed, so undone) are dropped from `steps.jsonl`, and prompts
already trained are never drawn again. Queue entries are acked only once a checkpoint covers them.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import IO, Any

import torch

from skillfactory.engines.base import Engine
from skillfactory.engines.setup import engine_batch_rows
from skillfactory.eval.harness import evaluate_task
from skillfactory.eval.held_out import held_out_problems
from skillfactory.group import Group
from skillfactory.queue import Queue, UndecodablePayload, open_queue, read_messages
from skillfactory.rollout.sampler import PromptStream, prompt_fits
from skillfactory.rollout.scoring import GroupScorer, local_scorer
from skillfactory.rollout.streams import (
    GROUPS_STREAM,
    LEARNER_GROUP,
    PROMPTS_STREAM,
    SAMPLERS_GROUP,
)
from skillfactory.run_folder import run_dir
from skillfactory.runspec import RunSpec
from skillfactory.seeds import derived_seed
from skillfactory.stages.rollouts import Cluster, EmbeddedRollouts, RemoteRollouts, Rollouts
from skillfactory.tasks import Problem, get_task, use_datasets
from skillfactory.tasks.rewards import with_terms
from skillfactory.tracking import (
    COMPLETION_COLUMNS,
    NullTracker,
    Tracker,
    completion_rows,
    eval_metrics,
    step_metrics,
)
from skillfactory.train.learner import Learner, LearnerCounters
from skillfactory.train.learner_setup import load_tokenizer, pad_token_id, setup_learner
from skillfactory.train.ranks import RankGroup, leading
from skillfactory.train.staleness import AdmissionController
from skillfactory.train.step_record import QueueLevel, StepRecord
from skillfactory.v1 import data_pb2
from skillfactory.wire.messages import group_from_proto

log = logging.getLogger(__name__)

STEPS_FILE = "steps.jsonl"
EVAL_FILE = "eval.jsonl"
EVALS_DIR = "evals"
BEST_DIR = "best"
SUMMARY_FILE = "summary.json"
MODEL_DIR = "model"
CHECKPOINTS_DIR = "checkpoints"
LEARNER_ID = "learner-0"


def grpo_dir(spec: RunSpec) -> Path:
    """Where stage 3 of this run writes."""
    return run_dir(spec) / "grpo"


def grpo_task_name(spec: RunSpec) -> str:
    """The task of the RL prompts: the GRPO section's, else the data stage's."""
    return spec.grpo.task or spec.data.task


class StalledRun(RuntimeError):
    """The learner refused every group for a long time: nothing can train."""

    def __init__(self, refused: int, counters: LearnerCounters) -> None:
        super().__init__(
            f"the learner refused the last {refused} groups (too stale: "
            f"{counters.dropped_stale}, zero reward variance: {counters.dropped_zero_variance} in "
            "all): with grpo.filter_zero_variance on, a model that is always right or always wrong "
            "yields no group to train on; turn the filter off or start from a stronger model"
        )


class NoPromptFits(ValueError):
    """Every GRPO prompt is longer than `grpo.max_prompt_length`."""


def max_refused_in_a_row(spec: RunSpec) -> int:
    """Groups refused in a row after which the run stops as stalled (20 steps' worth)."""
    return max(256, 20 * spec.grpo.prompts_per_step)


class GroupIntake:
    """Groups from the queue to the learner: which to consider (asked for by this learner, prompt
    neither trained on nor already waiting), which the learner accepts, and which entries a
    checkpoint may ack."""

    def __init__(
        self,
        queue: Queue,
        learner: Learner,
        rollouts: Rollouts,
        admission: AdmissionController,
        max_refused: int,
    ) -> None:
        self.queue = queue
        self.learner = learner
        self.rollouts = rollouts
        self.admission = admission
        self.max_refused = max_refused
        self.waiting: list[tuple[str, Group]] = []
        """Accepted groups not trained yet, with their queue entry ids."""
        self.unacked: list[str] = []
        """Entries trained on or refused since the last checkpoint."""
        self.duplicates = 0
        """Groups dropped because their prompt was already trained on or waiting (a reclaimed
        rollout task's second group)."""
        self.undecodable = 0
        """Queue entries that were not a readable group (acked away and counted)."""
        self.refused_in_a_row = 0
        self.wait_seconds = 0.0
        """Time spent waiting for the queue."""

    def wanted(self, group: Group) -> bool:
        """Whether a queued group may be considered at all."""
        if not self.rollouts.owns(group):
            return False
        index = group.prompt_index
        if self.learner.is_done(index) or any(g.prompt_index == index for _, g in self.waiting):
            self.duplicates += 1
            return False
        return True

    def pull(self, timeout_s: float = 0.2) -> None:
        """Take what the queue has (waiting up to `timeout_s`) and sort it."""
        waited = time.perf_counter()
        entries = self.queue.get(GROUPS_STREAM, LEARNER_GROUP, LEARNER_ID, 64, timeout_s)
        self.wait_seconds += time.perf_counter() - waited
        for entry_id, group in self._decode(entries):
            if not self.wanted(group):
                self.queue.ack(GROUPS_STREAM, LEARNER_GROUP, [entry_id])
            else:
                self._consider(entry_id, group)

    def _decode(self, entries: list[Any]) -> list[tuple[str, Group]]:
        try:
            messages = read_messages(entries, data_pb2.Group)
        except UndecodablePayload as error:
            self.undecodable += len(error.bad)
            log.error("dropping undecodable groups", extra={"entries": [e.id for e in error.bad]})
            self.queue.ack(GROUPS_STREAM, LEARNER_GROUP, [e.id for e in error.bad])
            messages = error.good
        return [(entry.id, group_from_proto(message)) for entry, message in messages]

    def _consider(self, entry_id: str, group: Group) -> None:
        accepted = self.learner.accepts(group)
        self.admission.on_group_done(accepted)
        self.refused_in_a_row = 0 if accepted else self.refused_in_a_row + 1
        if self.refused_in_a_row > self.max_refused:
            raise StalledRun(self.refused_in_a_row, self.learner.counters)
        if accepted:
            self.waiting.append((entry_id, group))
        else:
            self.unacked.append(entry_id)

    def next_batch(self, size: int) -> list[Group]:
        """The next `size` accepted groups (their entries wait for the next checkpoint's ack), or
        nothing while fewer are waiting."""
        if len(self.waiting) < size:
            return []
        batch, self.waiting = self.waiting[:size], self.waiting[size:]
        self.unacked += [entry_id for entry_id, _ in batch]
        return [group for _, group in batch]

    def ack_covered(self) -> None:
        """Ack every entry trained on or refused so far (a checkpoint now covers them)."""
        self.queue.ack(GROUPS_STREAM, LEARNER_GROUP, self.unacked)
        self.unacked = []


class StepLog:
    """`steps.jsonl`: one `StepRecord` per line. Opening it drops the lines past the version the
    learner resumed from (steps a resume undid)."""

    def __init__(self, path: Path, version: int) -> None:
        self.rolled_back = keep_steps_up_to(path, version)
        self._file: IO[str] = path.open("a")

    def write(self, record: StepRecord) -> None:
        self._file.write(json.dumps(record.to_json()) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class EvalLog:
    """`eval.jsonl`: one evaluation during training per line (version, mean accuracy, task
    metrics). Opening it drops the lines past the version the learner resumed from."""

    def __init__(self, path: Path, version: int) -> None:
        self.path = path
        keep_steps_up_to(path, version)
        self.results: list[dict[str, Any]] = []
        if path.exists():
            self.results = [json.loads(line) for line in path.read_text().splitlines() if line]

    @property
    def best(self) -> dict[str, Any] | None:
        """The evaluation with the highest accuracy (the earliest of equals), if any."""
        return best_eval(self.results)

    def write(self, result: dict[str, Any]) -> None:
        with self.path.open("a") as handle:
            handle.write(json.dumps(result) + "\n")
        self.results.append(result)

    def summary(self) -> dict[str, Any]:
        """`best_step` and `best_eval_accuracy` for the stage summary (nothing without evals)."""
        best = self.best
        if best is None:
            return {}
        return {
            "best_step": best["version"],
            "best_eval_accuracy": best["accuracy"],
            "evaluations": len(self.results),
        }


def best_eval(results: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The evaluation with the highest accuracy; the earliest wins ties."""
    best: dict[str, Any] | None = None
    for result in results:
        if best is None or result["accuracy"] > best["accuracy"]:
            best = result
    return best


def keep_steps_up_to(path: Path, version: int) -> int:
    """Drop the lines of `steps.jsonl` past `version` (undone by a resume); returns how many."""
    if not path.exists():
        return 0
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    kept = [line for line in lines if json.loads(line)["version"] <= version]
    path.write_text("".join(line + "\n" for line in kept))
    return len(lines) - len(kept)


def publish(rollouts: Rollouts, learner: Learner) -> float:
    """Hand the learner's new weights to the samplers; returns the seconds it took."""
    started = time.perf_counter()
    rollouts.publish(learner)
    return time.perf_counter() - started


class GRPOStage:
    """Runs stage 3 of a spec from `model` (a local HF folder) with an engine on the same model
    (embedded) or the rollout services of a `Cluster`."""

    def __init__(
        self,
        spec: RunSpec,
        model: str | Path,
        engine_factory: Callable[[str], Engine],
        *,
        queue: Queue | None = None,
        out: Path | None = None,
        score: GroupScorer | None = None,
        cluster: Cluster | None = None,
        ranks: RankGroup | None = None,
        tracker: Tracker | None = None,
    ) -> None:
        self.spec = spec
        self.tracker: Tracker = tracker or NullTracker()
        self.model_path = str(model)
        self.engine_factory = engine_factory
        self.cluster = cluster
        self.ranks = leading(ranks)
        self._queue = queue
        self.out = out or grpo_dir(spec)
        self.seed = derived_seed(spec.seed, "grpo")
        use_datasets(spec.datasets)
        self.task = get_task(grpo_task_name(spec))
        self.score = score or local_scorer(allow_plugins=True)  # the embedded run's own code
        self.tokenizer: Any = None

    @property
    def queue(self) -> Queue:
        """The queue between the samplers and the learner (opened on first use)."""
        if self._queue is None:
            self._queue = open_queue(self.cluster.queue if self.cluster else self.spec.queue)
        return self._queue

    # outputs --------------------------------------------------------------------------------

    def model_dir(self) -> Path:
        """The final model folder."""
        return self.out / MODEL_DIR

    def is_finished(self) -> bool:
        """Whether a previous run of this stage trained every step and saved the model."""
        summary = self.out / SUMMARY_FILE
        if not summary.exists() or not (self.model_dir() / "config.json").exists():
            return False
        return int(json.loads(summary.read_text()).get("steps", 0)) >= self.spec.grpo.steps

    def summary(self) -> dict[str, Any]:
        """What the last run of this stage wrote to `summary.json`."""
        result: dict[str, Any] = json.loads((self.out / SUMMARY_FILE).read_text())
        return result

    # parts ----------------------------------------------------------------------------------

    def build_learner(self) -> Learner:
        """The learner on the model, resumed from the latest checkpoint when there is one (rank 0
        of several first tells the other ranks to build the same one)."""
        self.tokenizer = load_tokenizer(self.model_path)
        pad = pad_token_id(self.tokenizer)
        checkpoints = self.out / CHECKPOINTS_DIR
        if self.ranks is not None:
            grpo = self.spec.grpo.model_dump_json()
            self.ranks.tell("grpo", grpo, self.model_path, str(checkpoints), self.seed, pad)
        return setup_learner(
            self.spec.grpo,
            self.model_path,
            checkpoints,
            seed=self.seed,
            pad_token_id=pad,
            ranks=self.ranks,
            run_id=self.spec.name,
        )

    def problems(self) -> list[Problem]:
        """The problems of the prompt stream: the task's, minus those whose prompt is too long."""
        fits = prompt_fits(self.tokenizer, self.spec.grpo.max_prompt_length)
        problems = self.task.problems(self.spec.grpo.num_problems, seed=self.seed)
        terms = [(term.name, term.weight) for term in self.spec.grpo.rewards]
        budget = self.spec.grpo.max_response_length
        kept = [with_terms(problem, terms, budget) for problem in problems if fits(problem)]
        if not kept:
            raise NoPromptFits(
                f"every {self.task.name} prompt is longer than grpo.max_prompt_length "
                f"({self.spec.grpo.max_prompt_length} tokens)"
            )
        if len(kept) < len(problems):
            log.info("prompts too long left out", extra={"prompts": len(problems) - len(kept)})
        return kept

    def admission(self, learner: Learner) -> AdmissionController:
        """The staleness bound on what the samplers may be asked for, resumed with the learner."""
        spec = self.spec.grpo
        return AdmissionController(
            spec.prompts_per_step,
            spec.max_staleness,
            version=learner.version,
            accepted=learner.counters.groups_trained,
            limit=spec.steps * spec.prompts_per_step,
        )

    def setup_rollouts(
        self, learner: Learner, prompts: PromptStream, admission: AdmissionController
    ) -> tuple[Rollouts, int | None]:
        """The sampling side, and the torch threads the learner keeps (None: unchanged)."""
        if self.cluster is not None:
            restart_leftovers(self.queue)
            remote = RemoteRollouts(
                self.spec, self.cluster, self.model_path, prompts, admission, self.queue, learner
            )
            return remote, None
        sampler_threads, learner_threads = self.split_cores()
        embedded = EmbeddedRollouts(
            self.spec,
            self.engine_factory(self.model_path),
            self.score,
            prompts,
            admission,
            self.queue,
            learner=learner,
            prompts_per_call=max(1, min(self.spec.grpo.prompts_per_step, engine_rows(self.spec))),
            seed=self.seed,
            threads=sampler_threads,
        )
        return embedded, learner_threads

    def split_cores(self) -> tuple[int | None, int | None]:
        """Torch threads of the sampler and the learner. When they overlap on a CPU
        (`max_staleness > 0`) the cores are split between them, so that two thread teams do not
        fight over the same cores; synchronous runs take turns and keep the default."""
        cores = torch.get_num_threads()
        if self.spec.grpo.max_staleness == 0 or torch.cuda.is_available() or cores < 2:
            return None, None
        return cores // 2, cores - cores // 2

    def train(
        self, learner: Learner, batch: list[Group], rollouts: Rollouts, intake: GroupIntake
    ) -> StepRecord:
        """One step on `batch`, the weights published, and the step's record completed (the
        engine sleeps meanwhile in sleep mode)."""
        rollouts.pause()
        try:
            record = learner.train_step(batch)
            synced = publish(rollouts, learner)
        finally:
            rollouts.resume()
        intake.admission.on_version(learner.version)
        return replace(
            record,
            weight_sync_seconds=synced,
            dropped_stale=learner.counters.dropped_stale,
            dropped_zero_variance=learner.counters.dropped_zero_variance,
            duplicate_groups=intake.duplicates,
            queue=queue_levels(self.queue),
        )

    def maybe_checkpoint(self, learner: Learner, intake: GroupIntake) -> None:
        """Every `save_steps` and at the last step: a checkpoint, then the acks it covers."""
        spec = self.spec.grpo
        if learner.version % spec.save_steps == 0 or learner.version == spec.steps:
            learner.save_checkpoint(self.out / CHECKPOINTS_DIR)
            intake.ack_covered()

    def track_step(self, record: StepRecord, batch: list[Group]) -> None:
        """The step's metrics, and every `completions_every` steps a completions table."""
        self.tracker.log_metrics(step_metrics(record.to_json()), step=record.version)
        every = self.spec.tracking.completions_every
        if every and record.version % every == 0:
            rows = completion_rows(
                batch,
                record.version,
                record.version - 1,
                self.tokenizer,
                self.spec.tracking.max_completions,
            )
            self.tracker.log_table("completions", COMPLETION_COLUMNS, rows, step=record.version)

    # evaluation during training -------------------------------------------------------------

    def eval_due(self, version: int) -> bool:
        """Whether `grpo.eval_every` asks for an evaluation at this version (and at the last)."""
        every = self.spec.grpo.eval_every
        return every > 0 and (version % every == 0 or version == self.spec.grpo.steps)

    def eval_spec(self) -> RunSpec:
        """The eval section as training evaluates: no budget forcing, at most
        `max_response_length` tokens."""
        forcing = self.spec.eval.budget_forcing.model_copy(update={"enabled": False})
        max_tokens = min(self.spec.eval.max_tokens, self.spec.grpo.max_response_length)
        evaluation = self.spec.eval.model_copy(
            update={"max_tokens": max_tokens, "budget_forcing": forcing}
        )
        return self.spec.model_copy(update={"eval": evaluation})

    def evaluate_now(self, learner: Learner, rollouts: Rollouts) -> dict[str, Any]:
        """Held-out accuracy of the current policy on the GRPO task: on the embedded engine (it
        holds the new weights), else on an engine of the stage's factory (the rollout fleet in
        the distributed mode) over the model saved for it. Writes `evals/step-<v>/`."""
        spec = self.eval_spec()
        task = grpo_task_name(spec)
        problems = held_out_problems(spec, task, spec.grpo.eval_problems)
        out = self.out / EVALS_DIR / f"step-{learner.version:06d}"
        if isinstance(rollouts, EmbeddedRollouts):
            with rollouts.lock:
                metrics = evaluate_task(rollouts.engine, spec, task, problems, out)
        else:
            folder = self.out / EVALS_DIR / MODEL_DIR
            learner.save_model(folder)
            self.tokenizer.save_pretrained(folder)
            engine = self.engine_factory(str(folder))
            try:
                metrics = evaluate_task(engine, spec, task, problems, out)
            finally:
                engine.close()
        return {
            "version": learner.version,
            "accuracy": metrics["accuracy"],
            "tasks": {task: metrics},
        }

    def maybe_evaluate(self, learner: Learner, rollouts: Rollouts, evals: EvalLog) -> None:
        """Every `eval_every` steps: evaluate, log, and keep the model when it is the best yet."""
        if not self.eval_due(learner.version):
            return
        result = self.evaluate_now(learner, rollouts)
        improved = evals.best is None or result["accuracy"] > evals.best["accuracy"]
        evals.write(result)
        self.tracker.log_metrics(eval_metrics("eval", result["tasks"]), step=learner.version)
        if improved:
            learner.save_model(self.out / BEST_DIR)
            self.tokenizer.save_pretrained(self.out / BEST_DIR)

    # the loop -------------------------------------------------------------------------------

    def run(self, on_step: Callable[[StepRecord], None] | None = None) -> dict[str, Any]:
        """Train until `grpo.steps` versions exist; returns the summary."""
        spec = self.spec.grpo
        started = time.perf_counter()
        self.out.mkdir(parents=True, exist_ok=True)
        learner = self.build_learner()
        resumed_from = learner.version
        steps_log = StepLog(self.out / STEPS_FILE, learner.version)
        evals = EvalLog(self.out / EVAL_FILE, learner.version)
        admission = self.admission(learner)
        rollouts, learner_threads = self.setup_rollouts(
            learner, PromptStream(self.problems(), skip=learner.is_done), admission
        )
        intake = GroupIntake(
            self.queue, learner, rollouts, admission, max_refused_in_a_row(self.spec)
        )
        restore_threads = set_threads(learner_threads)
        rollouts.start()
        try:
            while learner.version < spec.steps:
                intake.pull()
                if rollouts.error is not None:
                    raise RuntimeError("the sampler failed") from rollouts.error
                while learner.version < spec.steps and (
                    batch := intake.next_batch(spec.prompts_per_step)
                ):
                    record = self.train(learner, batch, rollouts, intake)
                    steps_log.write(record)
                    self.track_step(record, batch)
                    self.maybe_checkpoint(learner, intake)
                    self.maybe_evaluate(learner, rollouts, evals)
                    if on_step is not None:
                        on_step(record)
            learner.save_model(self.model_dir())
        finally:
            admission.close()
            rollouts.close()
            steps_log.close()
            set_threads(restore_threads)
            if self.ranks is not None:
                self.ranks.tell("end")
        self.tokenizer.save_pretrained(self.model_dir())
        summary = {
            "steps": learner.version,
            "resumed_from_version": resumed_from,
            "steps_rolled_back": steps_log.rolled_back,
            "groups_sampled": rollouts.groups_asked,
            "duplicate_groups": intake.duplicates,
            "undecodable_groups": intake.undecodable,
            "learner_wait_seconds": round(intake.wait_seconds, 2),
            "wall_seconds": round(time.perf_counter() - started, 2),
            "learner_ranks": learner.world_size,
            **evals.summary(),
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


def queue_levels(queue: Queue) -> dict[str, QueueLevel]:
    """Depth (not yet delivered) and pending (delivered, not acked) of the GRPO streams."""
    levels = {}
    for stream, group in ((GROUPS_STREAM, LEARNER_GROUP), (PROMPTS_STREAM, SAMPLERS_GROUP)):
        try:
            levels[stream] = QueueLevel(queue.depth(stream, group), queue.pending(stream, group))
        except Exception:  # a stream nobody created yet (embedded mode has no prompts stream)
            continue
    return levels


def set_threads(threads: int | None) -> int | None:
    """Set this thread's torch threads; returns the previous count (None: nothing changed)."""
    if threads is None:
        return None
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    return previous


def engine_rows(spec: RunSpec) -> int:
    """Prompts per generate call that fill the engine's batch (rows / group size)."""
    rows = engine_batch_rows(spec.engine)
    return max(1, rows // spec.grpo.group_size)
