"""Policy engine benchmark: evaluations per second under a 1,000-rule policy.

    .venv/bin/python -m bench.bench_policy            # 200,000 evaluations per figure
    .venv/bin/python -m bench.bench_policy --quick    # 10,000, for CI

Prints figures; never fails on time.  Rates are per CPU-second of this process
(``time.process_time``), so a busy machine does not distort them much; the
engine is single-threaded.  What it measures:

1. compiling a 1,000-rule policy (``compile_policy``: validation, pattern
   parsing, the program index);
2. *cold* evaluations: every line is new (a unique argument is appended and the
   parse cache is cleared), so each one is parsed by tree-sitter, decoded,
   unwrapped and matched -- the worst case;
3. typical lines repeated with the decision cache cleared before each one:
   parsing comes from the LRU cache, matching against the rules runs every time;
4. *warm*: lines and decisions both cached (a session repeats itself a lot);
5. the cold figure split by line kind: plain words and lists of them (the fast
   path, no parser), shell syntax (quotes, substitutions, loops), wrappers
   (sudo, bash -c).

The aim (issue 3) is >= 10,000 typical lines/s on one core; the ratio to it is
printed.  There is no OpenSSH counterpart to compare with: this is CPU work the
bastion adds to each command.
"""

from __future__ import annotations

import argparse
import random
import sys
import time

from bastion.identity.principal import Principal
from bastion.policy import compile_policy
from bastion.policy.commands import _extract_cached

AIM = 10_000
PROGRAMS = ["ls", "cat", "grep", "systemctl", "journalctl", "kubectl", "docker", "git", "tail",
            "head", "df", "du", "ps", "find", "tar", "curl", "psql", "rm", "cp", "mv", "chmod",
            "chown", "sed", "awk", "sort", "uniq", "wc", "free", "uptime", "top", "ss", "ip",
            "ping", "dig", "openssl", "python3", "node", "npm", "make", "helm", "terraform",
            "aws", "az", "gcloud", "redis-cli", "mysql", "nginx", "apt-get", "yum", "crontab"]
PLAIN = ["ls -la /var/log", "systemctl status nginx", "df -h", "uptime", "free -m",
         "journalctl -u nginx -n 100 --no-pager", "kubectl get pods -n prod", "docker ps -a",
         "git log -n 5 --oneline", "tail -n 200 /var/log/syslog", "du -sh /srv/data",
         "ps aux", "cat /etc/hosts", "ss -tlnp", "ip addr show", "helm list -A"]
PLAIN += ["ps aux | grep -v grep | grep nginx", "systemctl is-active nginx && echo up"]
SYNTAX = ["cat /var/log/syslog | grep -i 'error' | tail -n 20",
          "journalctl -u app --since '1 hour ago' | wc -l", 'echo "$(date) $(hostname)"',
          "for f in /var/log/*.log; do wc -l \"$f\"; done", "test -f /etc/nginx/nginx.conf && echo ok",
          "find /tmp -name '*.tmp' -mtime +7 -print", "kubectl get pods -o json | jq '.items[].metadata.name'",
          "cd /srv/app && git status --short", "df -h | awk '{print $5}' | sort -n"]
WRAPPED = ["sudo systemctl restart nginx", "sudo -u postgres psql -c 'select 1'",
           "bash -c 'cd /srv/app && make test'", "timeout 10 curl -s http://localhost:8080/health",
           "nice -n 10 tar czf /tmp/backup.tgz /srv/data", "sudo journalctl -u app -n 50",
           "env LANG=C sort /tmp/x", "xargs -n 1 echo"]


def build_rules(n: int, rng: random.Random) -> list[dict]:
    """n rules over ~1,000 programs: exact names, some globs, some `*`, some scoped."""
    programs = PROGRAMS + [f"tool{i}" for i in range(950)]
    rules = []
    for i in range(n):
        kind = rng.random()
        action = rng.choice(["allow"] * 6 + ["review"] * 2 + ["deny"] * 2)
        prog = rng.choice(programs)
        if kind < 0.01:
            pattern = f"* /secret{i}/*"
            action = "deny"
        elif kind < 0.03:
            pattern = f"{prog[:3]}* --danger{i}"
        elif kind < 0.6:
            pattern = f"{prog} sub{i}"
        elif kind < 0.8:
            pattern = f"{prog} -{rng.choice('abcdefghx')} --opt{i}"
        else:
            pattern = prog
        rule = {"name": f"rule-{i}", "action": action, "commands": [pattern]}
        if rng.random() < 0.1:
            rule["who"] = [rng.choice(["role:agents", "role:ops", "group:g1"])]
        if rng.random() < 0.1:
            rule["targets"] = [rng.choice(["web*", "label:prod", "db1"])]
        rules.append(rule)
    rules += [{"name": "allow-typical", "action": "allow", "commands": PROGRAMS},
              {"name": "no-shadow", "action": "deny", "commands": ["* /etc/shadow"]},
              {"name": "no-rm-r", "action": "deny", "commands": ["rm -r", "rm --recursive"]}]
    return rules


def rate(policy, principal, lines: list[str], n: int, *, cold: bool,
         fresh_decisions: bool = False) -> float:
    """Evaluations per second.  cold: every line new; fresh_decisions: lines repeat
    (parses are cached) but every decision is computed again."""
    _extract_cached.cache_clear()
    policy.clear_cache()
    k = len(lines)
    clear = policy.clear_cache
    t0 = time.process_time()
    for i in range(n):
        line = lines[i % k]
        if cold:
            line = f"{line} u{i}"
        elif fresh_decisions:
            clear()
        policy.evaluate(principal, None, line)
    return n / max(time.process_time() - t0, 1e-9)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10,000 evaluations per figure")
    parser.add_argument("--rules", type=int, default=1000, help="policy size (default 1000)")
    parser.add_argument("-n", type=int, help="evaluations per figure")
    args = parser.parse_args(argv)
    n = args.n or (10_000 if args.quick else 200_000)
    rng = random.Random(3)
    raw = build_rules(args.rules, rng)
    t0 = time.process_time()
    policy = compile_policy({"default": "deny", "opaque": "review"}, raw)
    compile_ms = (time.process_time() - t0) * 1000
    agent = Principal(subject="agent-1", roles=("agents",))
    typical = PLAIN * 3 + SYNTAX * 2 + WRAPPED      # mostly plain lines, as agents type them
    print(f"bench_policy: {len(raw):,} rules, {n:,} evaluations per figure, "
          f"per CPU-second of one core")
    print(f"  compile_policy: {compile_ms:,.0f} ms")
    cold = rate(policy, agent, typical, n, cold=True)
    matching = rate(policy, agent, typical, n, cold=False, fresh_decisions=True)
    warm = rate(policy, agent, typical, n, cold=False)
    print(f"  cold (every line new: parse + match):       {cold:12,.0f} evaluations/s  "
          f"({cold / AIM:.2f}x the {AIM:,}/s aim)")
    print(f"  parse cached, every decision recomputed:    {matching:12,.0f} evaluations/s  "
          f"({matching / AIM:.2f}x)")
    print(f"  warm (lines and decisions cached):          {warm:12,.0f} evaluations/s  "
          f"({warm / AIM:.2f}x)")
    for label, lines in (("plain words", PLAIN), ("shell syntax", SYNTAX),
                         ("wrappers", WRAPPED)):
        r = rate(policy, agent, lines, max(n // 4, 1000), cold=True)
        print(f"    cold, {label:14s}                      {r:12,.0f} evaluations/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
