#!/usr/bin/python3
"""Run a private demo Dovecot in the background (used by scripts/demo.sh).

    demo.py start    (re)create DEMO_DIR, start Dovecot, deliver sample mail
    demo.py stop     stop it (by the pid in DEMO_DIR/run/master.pid)
    demo.py status   say whether it runs and how to connect

Environment:
  DEMO_DIR            default /tmp/dovecot-lmdb-demo (wiped by start)
  DEMO_MAIL_LOCATION  default lmdb:~/lmdb (e.g. maildir:~/Maildir to try
                      the demo without the plugin)
  DEMO_CORPUS         folder of sample messages; default
                      <repo>/../shared/corpus/spamassassin/easy_ham, else
                      generated messages
  DEMO_MESSAGES       how many to deliver, default 20
  DOVECOT_LMDB_MODULE_DIR  where the built lib*.so are (see dovecot_harness)
"""

import json
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import dovecot_harness  # noqa: E402
from dovecot_harness import Dovecot, make_message, port_is_free, free_port  # noqa: E402

DEMO_DIR = os.environ.get("DEMO_DIR", "/tmp/dovecot-lmdb-demo")
STATE = os.path.join(DEMO_DIR, "demo.json")
USER, PASSWORD = "demo", "demo"
PREFERRED_PORTS = {"imap": 10143, "imaps": 10993, "pop3": 10110,
                   "pop3s": 10995, "lmtp": 10024}
DEFAULT_CORPUS = os.path.join(dovecot_harness.REPO_ROOT, "..", "shared",
                              "corpus", "spamassassin", "easy_ham")


def load_state():
    try:
        with open(STATE) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def instance(state):
    return Dovecot(DEMO_DIR, mail_location=state["mail_location"],
                   users={USER: PASSWORD}, ports=state["ports"],
                   foreground=False)


def pick_ports():
    ports = {}
    for svc, port in PREFERRED_PORTS.items():
        if not port_is_free(port):
            port = free_port()
            while port in ports.values():
                port = free_port()
        ports[svc] = port
    return ports


def sample_messages(count):
    corpus = os.environ.get("DEMO_CORPUS", DEFAULT_CORPUS)
    msgs = []
    if os.path.isdir(corpus):
        for name in sorted(os.listdir(corpus)):
            path = os.path.join(corpus, name)
            if not os.path.isfile(path) or name.startswith(("cmds", ".")):
                continue
            with open(path, "rb") as f:
                data = f.read()
            if data.startswith(b"From "):       # mbox separator, not a header
                data = data.split(b"\n", 1)[1]
            msgs.append(data)
            if len(msgs) == count:
                break
        print("Sample mail: %d messages from %s" % (len(msgs), os.path.abspath(corpus)))
    if not msgs:
        msgs = [make_message("Demo message %d" % i,
                             "This is demo message number %d.\n" % i,
                             to="demo@localhost") for i in range(1, count + 1)]
        print("Sample mail: %d generated messages" % len(msgs))
    return msgs


def stop():
    state = load_state()
    if state is None:
        print("No demo state in %s; nothing to stop." % DEMO_DIR)
        return 0
    d = instance(state)
    if not d.is_running():
        print("The demo Dovecot is not running.")
        return 0
    pid = d.master_pid
    d.stop()
    print("Stopped the demo Dovecot (master pid %d). Files stay in %s." % (pid, DEMO_DIR))
    return 0


def print_howto(d):
    p = d.ports
    print("""
The demo Dovecot is running (master pid {pid}), mail_location = {loc}
Files, config and logs: {dir}  (log: {log})

  user demo, password demo, host 127.0.0.1
  IMAP  port {imap} (plain/STARTTLS)    IMAPS port {imaps} (TLS, self-signed cert)
  POP3  port {pop3}                     POP3S port {pop3s}
  LMTP  port {lmtp}

Try:
  curl -k --user demo:demo 'imap://127.0.0.1:{imap}/INBOX' -X 'FETCH 1:* (FLAGS)'
  curl -k --user demo:demo 'imaps://127.0.0.1:{imaps}/INBOX;UID=1'
  doveadm -c {conf} mailbox status -u demo 'messages unseen' INBOX
  mutt -f 'imaps://demo@127.0.0.1:{imaps}/INBOX'     (accept the certificate)
Thunderbird: IMAP server 127.0.0.1, port {imaps}, SSL/TLS, normal password,
  username demo (or port {imap} with STARTTLS / none).

Stop it with:  scripts/demo.sh stop   (or: make demo-stop)
""".format(pid=d.master_pid, loc=d.mail_location, dir=DEMO_DIR,
           log=d.log_path, conf=d.config_path, **p))


def start():
    old = load_state()
    if old is not None:
        d = instance(old)
        if d.is_running():
            print("Stopping the previous demo Dovecot (pid %d)." % d.master_pid)
            d.stop()
    if os.path.exists(DEMO_DIR):
        if old is None and os.listdir(DEMO_DIR):
            sys.exit("%s exists and is not a demo directory; set DEMO_DIR." % DEMO_DIR)
        shutil.rmtree(DEMO_DIR)
    mail_location = os.environ.get("DEMO_MAIL_LOCATION", "lmdb:~/lmdb")
    d = Dovecot(DEMO_DIR, mail_location=mail_location,
                users={USER: PASSWORD}, ports=pick_ports(), foreground=False)
    if mail_location.startswith("lmdb:") and not d.lmdb_module_available():
        sys.exit("%s is not built (module dir: %s). Run make, or set "
                 "DOVECOT_LMDB_MODULE_DIR." % (dovecot_harness.LMDB_PLUGIN_FILE,
                                               d.module_dir))
    print("Starting Dovecot in %s (mail_location %s, mail_plugins: %s)"
          % (DEMO_DIR, mail_location, " ".join(d.mail_plugins) or "none"))
    d.start()
    with open(STATE, "w") as f:
        json.dump({"mail_location": mail_location, "ports": d.ports}, f)

    count = int(os.environ.get("DEMO_MESSAGES", "20"))
    delivered = 0
    for msg in sample_messages(count):
        d.lmtp_deliver(USER, msg)
        delivered += 1
    conn = d.imap(USER)
    typ, data = conn.select("INBOX", readonly=True)
    conn.logout()
    print("Delivered %d messages over LMTP; IMAP SELECT INBOX says %s EXISTS."
          % (delivered, data[0].decode()))
    problems = d.log_problems()
    if problems:
        print("WARNING: the Dovecot log has errors:\n  " + "\n  ".join(problems))
    print_howto(d)
    return 1 if problems or int(data[0]) != delivered else 0


def status():
    state = load_state()
    if state is None or not instance(state).is_running():
        print("The demo Dovecot is not running.")
        return 1
    print_howto(instance(state))
    return 0


def main(argv):
    cmd = argv[1] if len(argv) > 1 else "start"
    if cmd == "start":
        return start()
    if cmd == "stop":
        return stop()
    if cmd == "status":
        return status()
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
