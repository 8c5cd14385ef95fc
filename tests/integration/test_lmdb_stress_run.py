"""A short run of the stress harness (tests/stress/stress.py, `make
stress`): concurrent IMAP sessions of several users and LMTP deliveries,
with every mailbox, flag and SEARCH answer verified at the end, before and
after an index rebuild from LMDB.  It must end with 0 errors.

STRESS_TEST_SECONDS sets the length (default 20 s); the 10-minute figure in
the README comes from `make stress STRESS_SECONDS=600`.
"""

import os
import re
import subprocess
import sys

import dovecot_harness

STRESS = os.path.join(dovecot_harness.REPO_ROOT, "tests", "stress",
                      "stress.py")


def test_stress_short_run():
    seconds = float(os.environ.get("STRESS_TEST_SECONDS", "20"))
    res = subprocess.run(
        [sys.executable, STRESS, "--seconds", str(seconds), "--progress",
         "1000"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, timeout=seconds + 300)
    print(res.stdout)
    m = re.search(r"^errors: (\d+)$", res.stdout, re.M)
    assert m and res.returncode == 0 and m.group(1) == "0", res.stdout
    m = re.search(r"^commands: (\d+) in", res.stdout, re.M)
    assert m and int(m.group(1)) > 100 * seconds / 20, res.stdout
