"""The learner service's Prometheus series, fed by the run controller from typed records.

Series: `skillfactory_learner_runs{state}`, `skillfactory_learner_current_stage{stage}`,
`skillfactory_learner_step`, `skillfactory_learner_loss`, `skillfactory_learner_reward_mean`,
`skillfactory_learner_reward_term{reward}`, `skillfactory_learner_reward_term_failures_total{reward}`,
`skillfactory_learner_learning_rate`, `skillfactory_learner_policy_version`,
`skillfactory_learner_dropped_groups{reason}`, `skillfactory_learner_steps_total`,
`skillfactory_learner_samples_trained_total`, `skillfactory_learner_weight_sync_seconds`,
`skillfactory_learner_staleness` (completions per staleness, histogram),
`skillfactory_learner_grad_norm`, `skillfactory_learner_kl`, `skillfactory_learner_step_seconds`,
`skillfactory_learner_duplicate_groups_total`, `skillfactory_learner_truncated_completion_fraction`,
`skillfactory_learner_overlong_penalty_mean`, and the GRPO streams' `skillfactory_queue_depth`
and `skillfactory_queue_pending` (label `stream`: groups, prompts).
"""

from __future__ import annotations

import math

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from skillfactory.runspec import STAGES
from skillfactory.serving.run_store import STATES
from skillfactory.train.step_record import StepRecord

STALENESS_BUCKETS = (0, 1, 2, 4, 8, 16)
STEP_SECONDS_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class LearnerMetrics:
    """Learner series in a server's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        def gauge(name: str, text: str, labels: tuple[str, ...] = ()) -> Gauge:
            return Gauge(f"skillfactory_learner_{name}", text, labels, registry=registry)

        self.runs = gauge("runs", "Runs by state.", ("state",))
        self.stage = gauge("current_stage", "1 for the stage the running run is in.", ("stage",))
        self.step = gauge("step", "GRPO steps done (the policy version) of the running run.")
        self.loss = gauge("loss", "Loss of the last GRPO step.")
        self.reward_mean = gauge("reward_mean", "Mean reward of the last GRPO step's samples.")
        self.reward_term = gauge(
            "reward_term", "Mean of each reward term in the last GRPO step.", ("reward",)
        )
        self.reward_failures = Counter(
            "skillfactory_learner_reward_term_failures",
            "Reward term values that raised, timed out or were not allowed (scored 0).",
            ("reward",),
            registry=registry,
        )
        self.learning_rate = gauge("learning_rate", "Learning rate of the last GRPO step.")
        self.policy_version = gauge("policy_version", "Policy version the learner last produced.")
        self.dropped = gauge(
            "dropped_groups",
            "Groups the learner dropped in the running run, by reason.",
            ("reason",),
        )
        self.steps = Counter(
            "skillfactory_learner_steps", "GRPO steps trained by this learner.", registry=registry
        )
        self.samples = Counter(
            "skillfactory_learner_samples_trained",
            "Completions trained on by this learner.",
            registry=registry,
        )
        self.weight_sync = Histogram(
            "skillfactory_learner_weight_sync_seconds",
            "Seconds to hand new weights to the engine after a step.",
            registry=registry,
        )
        self.staleness = Histogram(
            "skillfactory_learner_staleness",
            "Completions trained on, by staleness (learner version − policy version).",
            buckets=STALENESS_BUCKETS,
            registry=registry,
        )
        self.grad_norm = gauge(
            "grad_norm", "Gradient norm of the last GRPO step (before clipping)."
        )
        self.kl = gauge("kl", "KL to the reference model in the last GRPO step (0 without one).")
        self.entropy = gauge("entropy", "Mean token entropy of the policy in the last GRPO step.")
        self.mismatch = gauge(
            "mismatch_ratio",
            "Learner/engine probability ratio of the last GRPO step's tokens, by statistic.",
            ("stat",),
        )
        self.truncated = gauge(
            "truncated_completion_fraction",
            "Share of the last GRPO step's completions cut at their token budget.",
        )
        self.overlong_penalty = gauge(
            "overlong_penalty_mean",
            "Mean soft overlong penalty added to the last GRPO step's rewards (0 or below).",
        )
        self.step_seconds = Histogram(
            "skillfactory_learner_step_seconds",
            "Wall time of one GRPO optimizer step, in seconds.",
            buckets=STEP_SECONDS_BUCKETS,
            registry=registry,
        )
        self.duplicates = Counter(
            "skillfactory_learner_duplicate_groups",
            "Groups dropped because their prompt was already trained on or waiting.",
            registry=registry,
        )
        self.queue_depth = Gauge(
            "skillfactory_queue_depth",
            "Entries of a GRPO stream not yet delivered to its readers (groups: the learner; "
            "prompts: the sampler workers).",
            ("stream",),
            registry=registry,
        )
        self.queue_pending = Gauge(
            "skillfactory_queue_pending",
            "Entries of a GRPO stream delivered and not yet acked.",
            ("stream",),
            registry=registry,
        )
        self._duplicates_seen = 0
        self.set_stage("")
        for state in STATES:
            self.runs.labels(state).set(0)

    def set_stage(self, current: str) -> None:
        """1 for the running run's stage, 0 for the others (all 0 between runs)."""
        for stage in STAGES:
            self.stage.labels(stage).set(1 if stage == current else 0)

    def set_run_counts(self, counts: dict[str, int]) -> None:
        """Runs per state."""
        for state, count in counts.items():
            self.runs.labels(state).set(count)

    def on_step(self, step: StepRecord) -> None:
        """Everything one GRPO step reports."""
        self.step.set(step.version)
        self.policy_version.set(step.version)
        self.loss.set(step.loss)
        self.reward_mean.set(step.reward_mean)
        for name, value in step.reward_terms.items():
            self.reward_term.labels(name).set(value)
        for name, count in step.reward_failures.items():
            self.reward_failures.labels(name).inc(count)
        self.learning_rate.set(step.learning_rate)
        self.dropped.labels("stale").set(step.dropped_stale)
        self.dropped.labels("zero_variance").set(step.dropped_zero_variance)
        self.steps.inc()
        self.samples.inc(step.samples)
        self.grad_norm.set(step.grad_norm if math.isfinite(step.grad_norm) else float("nan"))
        self.kl.set(step.kl)
        self.entropy.set(step.entropy)
        self.mismatch.labels("mean").set(step.mismatch_ratio_mean)
        self.mismatch.labels("max").set(step.mismatch_ratio_max)
        self.truncated.set(step.truncated_completion_fraction)
        self.overlong_penalty.set(step.overlong_penalty_mean)
        self.step_seconds.observe(step.seconds)
        self._count_duplicates(step.duplicate_groups)
        for stream, level in step.queue.items():
            self.queue_depth.labels(stream).set(level.depth)
            self.queue_pending.labels(stream).set(level.pending)
        self.weight_sync.observe(step.weight_sync_seconds)
        for staleness, count in step.staleness.items():
            for _ in range(count):
                self.staleness.observe(staleness)

    def _count_duplicates(self, so_far: int) -> None:
        if so_far < self._duplicates_seen:  # a new stage counts from 0
            self._duplicates_seen = 0
        self.duplicates.inc(so_far - self._duplicates_seen)
        self._duplicates_seen = so_far
