"""Staleness drop/counting and admission pacing, as sequences of events with expected counts."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from skillfactory.train.staleness import AdmissionController, StalenessFilter, group_staleness


def test_staleness_is_learner_minus_group_version() -> None:
    assert group_staleness(learner_version=5, policy_version=3) == 2
    assert group_staleness(learner_version=4, policy_version=4) == 0
    with pytest.raises(ValueError):
        group_staleness(learner_version=2, policy_version=3)


def test_filter_drops_groups_older_than_max_staleness_and_counts() -> None:
    # learner at 3, max_staleness 1: versions 3 and 2 kept (lag 0, 1); 1 and 0 dropped (lag 2, 3)
    stale_filter = StalenessFilter(max_staleness=1)
    kept = [stale_filter.keep(3, version) for version in (3, 2, 1, 0, 3)]
    assert kept == [True, True, False, False, True]
    assert (stale_filter.kept, stale_filter.dropped) == (3, 2)


def test_filter_with_zero_staleness_keeps_only_the_current_version() -> None:
    stale_filter = StalenessFilter(max_staleness=0)
    assert [stale_filter.keep(2, version) for version in (2, 1, 2)] == [True, False, True]
    assert (stale_filter.kept, stale_filter.dropped) == (2, 1)


def test_admission_pacing_sequence() -> None:
    # batch 4, max_staleness 1: bound = (1 + v + 1) × 4, i.e. 8 at version 0.
    admission = AdmissionController(batch=4, max_staleness=1)
    assert admission.try_admit(5) == 5  # 0 + 5 ≤ 8
    assert admission.try_admit(5) == 3  # only 3 left
    assert admission.try_admit(1) == 0  # in_flight 8 = bound
    for _ in range(4):
        admission.on_group_done(accepted=True)  # accepted 4, in_flight 4: still 8
    assert admission.try_admit(1) == 0
    admission.on_group_done(accepted=False)  # a rejected group frees its slot: 4 + 3 = 7
    assert admission.try_admit(3) == 1
    admission.on_version(1)  # bound 12; accepted 4 + in_flight 4 = 8 → 4 more
    assert admission.capacity == 4
    assert admission.try_admit(10) == 4
    admission.on_version(1)  # repeated and older versions change nothing
    admission.on_version(0)
    assert admission.try_admit(1) == 0
    for _ in range(8):
        admission.on_group_done(accepted=True)  # accepted 12, in_flight 0: 12 = bound
    assert (admission.accepted, admission.in_flight, admission.capacity) == (12, 0, 0)
    admission.on_version(2)  # bound 16 → 4
    assert admission.try_admit(100) == 4


def test_zero_staleness_admits_exactly_one_batch_per_version() -> None:
    admission = AdmissionController(batch=3, max_staleness=0)
    for version in range(4):
        assert admission.try_admit(100) == 3
        admission.on_group_done(accepted=True)
        admission.on_group_done(accepted=False)  # e.g. zero variance: replaced at this version
        assert admission.try_admit(100) == 1
        for _ in range(2):  # the two still in flight
            admission.on_group_done(accepted=True)
        assert admission.try_admit(100) == 0  # the step's batch is complete: wait for v + 1
        assert admission.accepted == 3 * (version + 1)
        admission.on_version(version + 1)


def test_resume_continues_the_bound() -> None:
    # (1 + 5 + 1) × 4 = 28 − 24 accepted = 4
    admission = AdmissionController(batch=4, max_staleness=1, version=5, accepted=24)
    assert admission.try_admit(10) == 4


def test_done_without_admission_is_an_error() -> None:
    with pytest.raises(RuntimeError):
        AdmissionController(batch=1, max_staleness=0).on_group_done(accepted=True)


def test_admit_blocking_waits_for_a_new_version() -> None:
    admission = AdmissionController(batch=2, max_staleness=0)
    assert admission.try_admit(2) == 2
    admission.on_group_done(accepted=True)
    admission.on_group_done(accepted=True)
    result: list[int] = []
    waiter = threading.Thread(target=lambda: result.append(admission.admit_blocking(5, timeout=10)))
    waiter.start()
    time.sleep(0.05)
    assert result == []  # still waiting
    admission.on_version(1)
    waiter.join(timeout=5)
    assert result == [2]


def test_admit_blocking_times_out_and_close_releases() -> None:
    admission = AdmissionController(batch=1, max_staleness=0)
    assert admission.admit_blocking(1, timeout=0.01) == 1
    assert admission.admit_blocking(1, timeout=0.01) == 0
    result: list[int] = []
    waiter = threading.Thread(target=lambda: result.append(admission.admit_blocking(1)))
    waiter.start()
    admission.close()
    waiter.join(timeout=5)
    assert result == [0]
    assert admission.try_admit(1) == 0


def test_concurrent_admission_never_exceeds_the_bound() -> None:
    # bound (2 + 0 + 1) × 5 = 15, raced by 8 threads admitting one at a time
    admission = AdmissionController(batch=5, max_staleness=2)
    counts = [0] * 8

    def admit(slot: int) -> None:
        for _ in range(50):
            counts[slot] += admission.try_admit(1)

    threads = [threading.Thread(target=admit, args=(slot,)) for slot in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(counts) == 15
    assert admission.in_flight == 15


def test_staleness_imports_no_torch() -> None:
    # A dispatcher imports admission control without the train extra.
    code = "import sys, skillfactory.train.staleness; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_run_limit_caps_admission_so_no_prompt_is_sampled_past_the_last_step() -> None:
    admission = AdmissionController(batch=4, max_staleness=2, limit=8)  # 2 steps in all
    assert admission.try_admit(100) == 8  # the staleness bound alone would allow 12
    for _ in range(8):
        admission.on_group_done(accepted=True)
    admission.on_version(1)
    assert admission.try_admit(1) == 0
    resumed = AdmissionController(batch=4, max_staleness=2, version=1, accepted=4, limit=8)
    assert resumed.try_admit(100) == 4
    resumed.on_group_done(accepted=False)  # a rejected group frees its slot, within the limit
    assert resumed.try_admit(100) == 1
