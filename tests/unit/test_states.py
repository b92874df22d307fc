"""Issue 11: one spelling of the job states; the places that must list them agree with it."""

from __future__ import annotations

from api import openapi
from importd.imports import progress, store
from importd.imports.states import ALL, FINAL, JobState
from importd.ops import metrics


def test_every_list_of_job_states_is_the_enum():
    names = [str(state) for state in ALL]
    assert list(store.STATES) == names
    assert list(metrics.JOB_STATES) == names
    assert openapi.STATE["enum"] == names  # written by hand on purpose (see api/openapi.py); kept equal here


def test_the_final_states_are_one_set():
    assert store.FINAL_STATES == progress.FINAL_STATES == FINAL == {JobState.SUCCESS, JobState.FAILURE,
                                                                   JobState.CANCELLED}


def test_a_state_read_back_as_text_equals_its_member():
    assert "FAILURE" == JobState.FAILURE and "FAILURE" in FINAL
    assert store.JobRecord(id="x", state="SUCCESS").finished
