"""pytest fixtures for the private-Dovecot integration tests.

Fixtures
  dovecot          a started instance for one test (function scope).
  dovecot_module   one started instance shared by all tests of a module.
  dovecot_factory  make(**kwargs) -> started Dovecot; for tests that need
                   several instances or a config decided inside the test.

Configuring an instance (merged, outermost first; later wins):
  1. default mail_location: $DOVECOT_TEST_MAIL_LOCATION or 'lmdb:~/lmdb';
  2. @pytest.mark.dovecot_config("maildir:~/Maildir", extra_config="...",
     mail_plugins=[...], users={...}) on the module (pytestmark), class or
     test; a positional argument is the mail_location;
  3. indirect parametrization: @pytest.mark.parametrize("dovecot",
     ["maildir:~/Maildir", {"mail_location": "lmdb:~/lmdb"}], indirect=True);
  4. keyword arguments of dovecot_factory(...).

Log hygiene: after every test, and again after each instance stops, the
Dovecot log must have no 'Error:', 'Panic:' or 'Fatal:' line, except lines
matching a regex given by @pytest.mark.dovecot_log_allow(r"...", ...).

Artifacts (config, logs, homes) go to $DOVECOT_TEST_TMPDIR (default
/tmp/dovecot-lmdb-tests)/run-XXXX/<test>; a passing test's directory is
removed unless DOVECOT_TEST_KEEP=1.  A failing test keeps its directory and
gets the tail of its Dovecot logs in the failure report.
"""

import os
import re
import shutil
import tempfile
import time

import pytest

import dovecot_harness
from dovecot_harness import Dovecot

LOG_TAIL_LINES = 80

_LIVE = []          # running instances, for the per-test log check
_KEPT = []          # artifact dirs kept because something failed


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "dovecot_config(mail_location=None, **kwargs): "
        "configuration of the Dovecot instance fixtures")
    config.addinivalue_line(
        "markers", "dovecot_log_allow(*regexes): Dovecot log lines with "
        "Error:/Panic:/Fatal: that this test expects")


# ------------------------------------------------------------ run dirs

@pytest.fixture(scope="session")
def dovecot_run_dir():
    base = os.environ.get("DOVECOT_TEST_TMPDIR", "/tmp/dovecot-lmdb-tests")
    os.makedirs(base, exist_ok=True)
    os.chmod(base, 0o755)            # the mail uid must traverse it
    run = tempfile.mkdtemp(prefix="run-", dir=base)
    os.chmod(run, 0o755)
    yield run
    if not _KEPT and not os.environ.get("DOVECOT_TEST_KEEP"):
        shutil.rmtree(run, ignore_errors=True)


def _instance_dir(run_dir, node):
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", node.name).strip("_")[:60]
    path = os.path.join(run_dir, name)
    n = 1
    while os.path.exists(path):
        n += 1
        path = os.path.join(run_dir, "%s-%d" % (name, n))
    return path


# ------------------------------------------------------------ config

def _config_from(node, param=None):
    kw = {"mail_location": os.environ.get("DOVECOT_TEST_MAIL_LOCATION",
                                          "lmdb:~/lmdb")}
    for marker in reversed(list(node.iter_markers("dovecot_config"))):
        if marker.args:
            kw["mail_location"] = marker.args[0]
        kw.update(marker.kwargs)
    if isinstance(param, str):
        kw["mail_location"] = param
    elif isinstance(param, dict):
        kw.update(param)
    return kw


def _allowed(node):
    pats = []
    for marker in node.iter_markers("dovecot_log_allow"):
        pats.extend(marker.args)
    return pats


def _start(root, kwargs):
    if not os.path.exists(dovecot_harness.DOVECOT_BIN):
        pytest.skip("dovecot is not installed (%s)" % dovecot_harness.DOVECOT_BIN)
    d = Dovecot(root, **kwargs)
    if d.mail_location.startswith("lmdb:") and not d.lmdb_module_available():
        pytest.skip("%s not built (module dir: %s; set DOVECOT_LMDB_MODULE_DIR)"
                    % (dovecot_harness.LMDB_PLUGIN_FILE, d.module_dir))
    d._test_failed = False
    d._checked_upto = 0
    try:
        d.start()
    except Exception:
        _KEPT.append(root)
        d.stop()
        raise
    _LIVE.append(d)
    return d


def _finish(d, allowed, failed):
    """Stop d, check the rest of its log, delete or keep its directory."""
    if d in _LIVE:
        _LIVE.remove(d)
    d.stop()
    problems = d.log_problems(allowed, since=d._checked_upto)
    failed = failed or d._test_failed or bool(problems)
    if failed or os.environ.get("DOVECOT_TEST_KEEP"):
        _KEPT.append(d.root)
    else:
        d.cleanup()
    if problems:
        pytest.fail("Dovecot log %s has problem lines after stop:\n%s"
                    % (d.log_path, "\n".join(problems)), pytrace=False)


# ------------------------------------------------------------ fixtures

@pytest.fixture
def dovecot_factory(request, dovecot_run_dir):
    made = []

    def make(**kwargs):
        cfg = _config_from(request.node)
        cfg.update(kwargs)
        d = _start(_instance_dir(dovecot_run_dir, request.node), cfg)
        made.append(d)
        request.node._dovecot_instances = (
            getattr(request.node, "_dovecot_instances", []) + [d])
        return d

    yield make
    failed = getattr(request.node, "_dovecot_failed", False)
    errors = []
    for d in made:
        try:
            _finish(d, _allowed(request.node), failed)
        except BaseException as e:    # check the others before failing
            errors.append(e)
    if errors:
        raise errors[0]


@pytest.fixture
def dovecot(request, dovecot_factory):
    cfg = _config_from(request.node, getattr(request, "param", None))
    return dovecot_factory(**cfg)


@pytest.fixture(scope="module")
def dovecot_module(request, dovecot_run_dir):
    cfg = _config_from(request.node, getattr(request, "param", None))
    d = _start(_instance_dir(dovecot_run_dir, request.node), cfg)
    yield d
    _finish(d, _allowed(request.node), False)


@pytest.fixture(autouse=True)
def _dovecot_log_guard(request):
    """Per-test log check for instances that outlive the test."""
    marks = {id(d): d.log_mark() for d in _LIVE}
    for d in _LIVE:
        request.node._dovecot_instances = (
            getattr(request.node, "_dovecot_instances", []) + [d])
        d._test_mark = marks[id(d)]
    yield
    allowed = _allowed(request.node)
    bad = []
    for d in list(_LIVE):        # function-scoped ones are gone by now
        time.sleep(0.2)          # let the log process catch up
        since = marks.get(id(d), 0)
        upto = d.log_mark()
        bad += ["%s: %s" % (d.root, line)
                for line in d.log_problems(allowed, since=since)]
        d._checked_upto = upto
    if bad:
        for d in _LIVE:
            d._test_failed = True
        pytest.fail("Dovecot log has problem lines:\n" + "\n".join(bad),
                    pytrace=False)


# ------------------------------------------------------------ reporting

def _tail(text, n=LOG_TAIL_LINES):
    lines = text.splitlines()
    return "\n".join(lines[-n:])


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if not rep.failed:
        return
    item._dovecot_failed = True
    for d in getattr(item, "_dovecot_instances", []):
        d._test_failed = True
        since = getattr(d, "_test_mark", 0)
        rep.sections.append(("dovecot log %s" % d.log_path,
                             _tail(d.log_text(since)) or "(empty)"))
        rep.sections.append(("dovecot info log (tail) %s" % d.info_log_path,
                             _tail(d.info_log_text())))
        startup = d.startup_log()
        if startup.strip():
            rep.sections.append(("dovecot startup output", _tail(startup)))


def pytest_terminal_summary(terminalreporter):
    if _KEPT:
        terminalreporter.write_line(
            "Dovecot artifacts kept: " + " ".join(sorted(set(_KEPT))))
