"""bench/stack_sampler.py: the in-process sampler of bench.profile's running-application column
(a real thread sampling this test's own main thread for half a second)."""

import time

from bench.stack_sampler import StackSampler


def waits_in_a_named_function(seconds: float) -> None:
    time.sleep(seconds)


def test_the_in_process_sampler_records_the_main_thread_only_while_on_in_py_spys_format():
    sampler = StackSampler()
    try:
        time.sleep(0.3)  # off: nothing recorded
        assert sampler.raw_lines() == []
        with sampler.on():
            waits_in_a_named_function(0.5)
        recorded = sum(sampler.stacks.values())
        time.sleep(0.3)  # off again
        assert sum(sampler.stacks.values()) <= recorded + 1  # at most the sample taken as the period ended
    finally:
        sampler.close()
    lines = sampler.raw_lines()
    ours = [entry for entry in lines if "waits_in_a_named_function (tests/bench/test_stack_sampler.py:" in entry]
    assert ours and all(entry.rsplit(" ", 1)[1].isdigit() for entry in lines)
    # Outermost frame first, as py-spy writes it: this test's function, then the one it calls.
    stack = ours[0].rsplit(" ", 1)[0].split(";")
    assert [frame.split(" (")[0] for frame in stack[-2:]] == [
        "test_the_in_process_sampler_records_the_main_thread_only_while_on_in_py_spys_format", "waits_in_a_named_function",
    ]
