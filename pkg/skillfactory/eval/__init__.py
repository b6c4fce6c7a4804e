"""Evaluation: skill-usage metrics of responses (accuracy, #Ans, #Ref, verdict F1, lengths)."""

from skillfactory.eval.skill_metrics import (
    AnswerCheck,
    ClassScores,
    LengthStats,
    ResponseMetrics,
    SkillMetrics,
    TokenCount,
    VerdictOutcome,
    aggregate,
    is_correct,
    length_stats,
    percentile,
    response_metrics,
    skill_metrics,
    task_check,
    verdict_outcomes,
    verdict_scores,
)

__all__ = [
    "AnswerCheck",
    "ClassScores",
    "LengthStats",
    "ResponseMetrics",
    "SkillMetrics",
    "TokenCount",
    "VerdictOutcome",
    "aggregate",
    "is_correct",
    "length_stats",
    "percentile",
    "response_metrics",
    "skill_metrics",
    "task_check",
    "verdict_outcomes",
    "verdict_scores",
]
