"""The crash matrix of tests/_crash.py on yunxin_v2: 7 seeded kill -9 runs, then a check
that the kills landed mid-batch."""

from tests._crash import matrix

sandbox, test_kill_9_mid_batch_then_restart, test_the_kills_landed_mid_batch = matrix("yunxin_v2")
