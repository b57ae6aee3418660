"""The policy digest (bastion.config.digest): layout and [store] do not change it, any value
that can change a decision does; and the pure comparison of what nodes publish
(bastion.recording.nodeconfig, bastion.recording.nodes.apart) and its rendering."""

from __future__ import annotations

import io
import tomllib

import pytest
from rich.console import Console

from bastion.cli.status import _peers_text, _policy_text
from bastion.config.digest import PREFIX, policy_digest, short
from bastion.recording import nodeconfig, nodes

BASE = """
[oidc]
issuer = "https://login.example/tenant/v2.0"
audience = "api://bastion"

[settings]
default = "deny"

[[targets]]
name = "web1"
host = "10.0.0.5"
port = 22

[[rules]]
name = "read-only"
action = "allow"
commands = ["ls", "cat"]

[store]
url = "postgresql://bastion@db1/bastion"
node = "bastion-a"
"""


def _digest(text: str) -> str:
    return policy_digest(tomllib.loads(text))


SAME = [
    ("comments and blank lines", BASE.replace('[settings]', '# the defaults\n\n[settings]')),
    ("key order within a table", BASE.replace('issuer = "https://login.example/tenant/v2.0"\n'
                                              'audience = "api://bastion"',
                                              'audience = "api://bastion"\n'
                                              'issuer = "https://login.example/tenant/v2.0"')),
    ("quoting style", BASE.replace('name = "read-only"', "name = 'read-only'")),
    ("inline table form", 'settings = { default = "deny" }\n'
                          + BASE.replace('[settings]\ndefault = "deny"\n', '')),
    ("another node's [store]", BASE.replace('node = "bastion-a"', 'node = "bastion-b"')
                                   .replace("db1", "db1.internal")),
    ("no [store] at all", BASE[:BASE.index("[store]")]),
]

DIFFERENT = [
    ("a rule's command", BASE.replace('"ls", "cat"', '"ls", "cat", "rm"')),
    ("a rule's action", BASE.replace('action = "allow"', 'action = "deny"')),
    ("a target's port", BASE.replace("port = 22", "port = 2222")),
    ("the default", BASE.replace('default = "deny"', 'default = "review"')),
    ("the audience", BASE.replace("api://bastion", "api://bastion-2")),
    ("an integer becoming a float", BASE.replace("port = 22", "port = 22.0")),
    ("a rule added", BASE + '\n[[rules]]\nname = "x"\naction = "deny"\ncommands = ["rm"]\n'),
    ("rules reordered", BASE.replace(
        '[[rules]]\nname = "read-only"\naction = "allow"\ncommands = ["ls", "cat"]\n',
        '[[rules]]\nname = "b"\naction = "deny"\ncommands = ["rm"]\n\n'
        '[[rules]]\nname = "read-only"\naction = "allow"\ncommands = ["ls", "cat"]\n')),
]


@pytest.mark.parametrize("label,text", SAME, ids=[s[0] for s in SAME])
def test_layout_and_the_store_table_do_not_change_the_digest(label, text):
    assert _digest(text) == _digest(BASE)


@pytest.mark.parametrize("label,text", DIFFERENT, ids=[d[0] for d in DIFFERENT])
def test_anything_that_can_change_a_decision_changes_the_digest(label, text):
    assert _digest(text) != _digest(BASE)


def test_digest_form_and_toml_dates():
    d = _digest(BASE)
    assert d.startswith(PREFIX) and len(d) == len(PREFIX) + 64
    int(d[len(PREFIX):], 16)
    dated = BASE + "\n[[masks]]\nname = \"m\"\nregex = \"x\"\nsince = 2026-12-08T01:02:03Z\n"
    assert _digest(dated) != _digest(dated.replace("01:02:03", "01:02:04"))
    assert short(d) == d[:len(PREFIX) + 12] and short(None) == "unknown"


def _row(node, policy="sha256:" + "a" * 64, ca="SHA256:ca1", key="SHA256:key1", **extra):
    return {"node": node, "policy": policy, "host_ca": ca, "host_key": key, **extra}


def test_differing_names_each_peer_per_column_and_ignores_unknown_values():
    mine = _row("a-w1")
    peers = [_row("a-w2"), _row("b-w1", policy="sha256:" + "b" * 64),
             _row("b-w2", policy="sha256:" + "b" * 64, ca="SHA256:ca2"),
             _row("old-release", policy=None, ca=None, key=None)]
    found = nodeconfig.differing(mine, peers)
    assert {c: [p["node"] for p in ps] for c, ps in found.items()} == \
        {"policy": ["b-w1", "b-w2"], "host_ca": ["b-w2"]}
    lines = nodeconfig.describe(mine, found)
    assert lines == [
        f"policy differs from live node(s): this node has sha256:{'a' * 12}, b-w1, b-w2 have "
        f"sha256:{'b' * 12}",
        "host CA differs from live node(s): this node has SHA256:ca1, b-w2 has SHA256:ca2"]
    assert nodeconfig.differing(mine, [_row("a-w2"), _row("c")]) == {}
    assert nodeconfig.differing(_row("new", policy=None), [_row("b")]) == {}    # not published
    assert len(nodeconfig.hints(["host_ca", "host_key"])) == 1      # one thing to do for both


def test_a_node_name_from_the_store_is_shown_inert():
    found = nodeconfig.differing(_row("a"), [_row("b\x1b[2J", policy="sha256:" + "c" * 64)])
    [line] = nodeconfig.describe(_row("a"), found)
    assert "\x1b" not in line and "b" in line


def test_apart_compares_only_nodes_not_gone():
    rows = [{**_row("a"), "state": "alive"}, {**_row("b", ca="SHA256:ca2"), "state": "late"},
            {**_row("c", policy="sha256:" + "c" * 64), "state": "gone"}]
    assert nodes.apart(rows) == {"host_ca": {"SHA256:ca1": ["a"], "SHA256:ca2": ["b"]}}
    assert nodes.apart(rows[:1] + rows[2:]) == {}


def _text(renderable) -> str:
    out = io.StringIO()
    Console(file=out, width=200, color_system=None).print(renderable)
    return out.getvalue()


def test_status_shows_a_refused_reload_and_workers_that_differ():
    policy = {"digest": "sha256:" + "d" * 64, "loaded": 1.0, "path": "/etc/bastion/policy.toml",
              "refused_at": 2.0, "refused": "line 3: not valid TOML", "node": None}
    serve = {"pid": 42, "policy": policy}
    text = _text(_policy_text(serve, {}))
    assert f"sha256:{'d' * 12} loaded" in text and "/etc/bastion/policy.toml" in text
    assert "reload refused" in text and "line 3: not valid TOML" in text
    assert "stays in force" in text and "workers" not in text
    other = {**policy, "digest": "sha256:" + "e" * 64, "refused": None}
    both = {"1": {"policy": policy}, "2": {"policy": other}}
    assert "the workers enforce 2 different policies" in _text(_policy_text(serve, both))
    assert "workers" not in _text(_policy_text(serve, {"1": {"policy": policy},
                                                       "2": {"policy": policy}}))
    assert _policy_text({"pid": 1}, {}) is None               # a serve of an earlier release


def test_status_peers_row():
    same = _text(_peers_text({"published": True, "live_peers": ["b"], "differ": []}))
    assert "1 live node(s), the same policy, host CA and host key" in same
    assert "no other live node" in _text(_peers_text({"published": True, "live_peers": []}))
    assert "not published" in _text(_peers_text({"published": False, "live_peers": ["b"]}))
    apart = _text(_peers_text({"published": True, "live_peers": ["b"],
                               "differ": ["policy differs from live node(s): ..."],
                               "hints": [nodeconfig.HINTS["policy"]]}))
    assert "policy differs" in apart and "SIGHUP" in apart
