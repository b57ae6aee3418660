"""The session channel's state machine (pure): the order of recording, decision, upstream, end."""

from __future__ import annotations

import pytest

from bastion.proto import channel as c
from bastion.ssh.masking import ChannelMasks

AWS_ID = "AKIA" + "Z7QW3RTY5UIO9PLK"                        # a fake access key id


def kinds(actions) -> list[str]:
    return [type(a).__name__ for a in actions]


def exec_core(command="uptime", pty=False, live=False, early=b""):
    core = c.ChannelCore("exec", command, pty, mask=lambda t: t.replace(AWS_ID, "[MASKED]"))
    if early:
        assert core.agent_data(early) == []            # kept until the recording exists
    actions = core.recording_opened(ChannelMasks(live=live))
    return core, actions


def relaying(live=False, command="cat"):
    core, _ = exec_core(command, live=live)
    core.granted(None)
    core.decided("allow")
    core.upstream_ready()
    return core


def test_input_that_came_early_is_recorded_before_the_grant_is_checked():
    core, actions = exec_core(early=b"secret-free input")
    assert actions == [c.Record(c.INPUT, b"secret-free input"), c.CheckGrant()]


@pytest.mark.parametrize("kind, command, pty, then", [
    ("exec", "uptime", False, [c.Decide("uptime")]),
    ("exec", "less f", True, [c.Decide("less f")]),
    ("shell", None, True, [c.Connect(True, None)]),
])
def test_a_granted_channel_goes_on_to_its_decision_or_its_shell(kind, command, pty, then):
    core = c.ChannelCore(kind, command, pty)
    core.recording_opened(ChannelMasks())
    assert core.granted(None) == then


@pytest.mark.parametrize("event, args, status, text", [
    ("granted", ("no grant lets a open a exec channel on target t",), 126, "no grant lets"),
    ("decided", ("deny", "bastion: denied by rule r: rm"), 126, "denied by rule r"),
])
def test_refusals_end_with_their_status_and_a_recorded_message(event, args, status, text):
    core, _ = exec_core("rm -rf /srv")
    if event == "decided":
        core.granted(None)
    actions = getattr(core, event)(*args)
    end = actions[-1]
    assert isinstance(end, c.End) and end.status == status and text.encode() in end.message
    assert c.Record(c.STDERR, end.message) in actions                 # recorded before the end
    assert not [a for a in actions if isinstance(a, (c.Connect, c.ToHost))]
    assert core.ended and core.agent_data(b"x") == [] and core.upstream_ready() == []


def test_a_shell_without_a_pty_is_refused():
    core = c.ChannelCore("shell", None, False)
    core.recording_opened(ChannelMasks())
    end = core.granted(None)[-1]
    assert end.status == c.EXIT_DENIED and b"needs a terminal" in end.message


@pytest.mark.parametrize("ok, expected", [(True, c.Connect(False, None)), (False, None)])
def test_a_held_command_runs_only_once_approved(ok, expected):
    core, _ = exec_core("systemctl restart nginx")
    core.granted(None)
    assert core.decided("review") == [c.AskApproval("systemctl restart nginx")]
    assert core.decided("allow") == []                     # a second answer changes nothing
    actions = core.approved(ok, "" if ok else "bastion: not approved (request 3)")
    if expected:
        assert actions == [expected]
    else:
        assert actions[-1].status == c.EXIT_NOT_APPROVED and not core.approved(True)


def test_input_and_eof_wait_for_the_upstream_then_go_in_order():
    core, _ = exec_core("cat", early=b"one ")
    core.granted(None)
    assert core.agent_data(b"two") == [c.Record(c.INPUT, b"two")]
    assert core.agent_eof() == []
    core.decided("allow")
    assert core.upstream_ready() == [c.ToHost(b"one "), c.ToHost(b"two"), c.HostEof(),
                                     c.ResumeAgent()]
    assert core.agent_data(b"3") == [c.Record(c.INPUT, b"3"), c.ToHost(b"3")]


def test_a_mediated_shell_gets_the_keys_and_records_none_of_them():
    core = c.ChannelCore("shell", None, True)
    core.agent_data(b"pass")
    core.recording_opened(ChannelMasks())
    assert core.granted(None) == [c.Connect(True, None)]
    assert core.agent_data(b"word") == []                  # no Record: typed text is not kept
    assert core.upstream_ready() == [c.ToShell(b"pass"), c.ToShell(b"word"), c.ResumeAgent()]
    assert core.host_data(b"out") == []                     # its output comes through output()
    assert core.output(b"out") == [c.Record(c.STDOUT, b"out"), c.ToAgent(b"out")]


@pytest.mark.parametrize("live", [False, True])
@pytest.mark.parametrize("chunk", [None, 1, 5])
def test_output_is_recorded_before_it_is_shown_whole_or_byte_by_byte(live, chunk):
    core = relaying(live=live)
    data = f"key {AWS_ID} done\n".encode()
    pieces = [data] if chunk is None else [data[i:i + chunk] for i in range(0, len(data), chunk)]
    actions = [a for piece in pieces for a in core.host_data(piece)]
    actions += core.host_closed(0, None)
    recorded = shown = b""
    for a in actions:
        if isinstance(a, c.Record):
            recorded += a.data
        elif isinstance(a, c.ToAgent):
            shown += a.data
            assert len(shown) <= len(recorded) or not live   # live: nothing shown unrecorded
    if live:
        assert AWS_ID.encode() not in recorded and recorded == shown
    else:                                # (the recording worker masks; the agent gets it raw)
        assert recorded == shown == data
    assert actions[-1] == c.End(0, None)


def test_stderr_stays_stderr():
    core = relaying()
    assert core.host_data(b"oops", stderr=True) == [c.Record(c.STDERR, b"oops"),
                                                    c.ToAgent(b"oops", True)]


def test_the_end_of_an_exec_command_carries_its_status_or_signal():
    core = relaying(command="false")
    actions = core.host_closed(1, None)
    assert actions == [c.CommandResult(1), c.End(1, None)]
    core = relaying(command="sleep 9")
    sig = ("TERM", False, "", "")
    assert core.host_closed(None, sig)[-1] == c.End(None, sig)


def test_a_lost_upstream_is_a_255_with_a_message():
    core = relaying()
    end = core.host_closed(None, None, lost="connection reset")[-1]
    assert end.status == c.EXIT_BASTION_ERROR and b"upstream connection lost" in end.message


def test_when_the_agent_goes_its_running_command_ends_recorded_and_nothing_is_shown():
    core = relaying(live=True)
    core.host_data(b"partial AKIA")                       # held back by the live masker
    actions = core.agent_closed()
    assert actions[1:] == [c.HostEof(), c.CloseHostLater()] and not core.ended
    actions = core.host_data(b" more\n") + core.host_closed(3, None)
    assert not [a for a in actions if isinstance(a, c.ToAgent)]
    assert b"".join(a.data for a in actions if isinstance(a, c.Record)) == b"partial AKIA more\n"
    assert c.CommandResult(3) in actions and actions[-1] == c.End(3, None, agent=False)
    assert core.host_closed(0, None) == [] and core.agent_closed() == []


@pytest.mark.parametrize("state", ["granting", "deciding", "reviewing", "connecting"])
def test_when_the_agent_goes_before_its_command_runs_it_never_runs(state):
    core, _ = exec_core("systemctl restart x")
    steps = {"deciding": [("granted", None)],
             "reviewing": [("granted", None), ("decided", "review")],
             "connecting": [("granted", None), ("decided", "allow")]}.get(state, [])
    for event, arg in steps:
        getattr(core, event)(arg)
    assert core.state == state
    assert core.agent_closed()[-1] == c.End(None, agent=False) and core.ended
    assert core.approved(True) == [] and core.upstream_ready() == []


def test_a_recording_failure_ends_at_once_without_recording_more():
    core = relaying()
    actions = core.recording_failed("disk full")
    assert kinds(actions) == ["End"] and actions[0].status == c.EXIT_BASTION_ERROR
    assert b"can no longer be recorded (disk full)" in actions[0].message


def test_the_bastions_own_messages_are_masked_in_the_recording():
    core, _ = exec_core()
    core.granted(None)
    actions = core.decided("deny", f"bastion: denied: {AWS_ID}")
    record = [a for a in actions if isinstance(a, c.Record)][0]
    assert AWS_ID.encode() not in record.data and b"[MASKED]" in record.data


def test_an_error_while_connecting_leaves_a_marker_and_a_255():
    core, _ = exec_core()
    core.granted(None)
    core.decided("allow")
    actions = core.error("target web1 refused the session: no")
    assert actions[0] == c.Marker("error: target web1 refused the session: no")
    assert actions[-1].status == c.EXIT_BASTION_ERROR


def _ended(actions):
    return next(a for a in actions if isinstance(a, c.End))


@pytest.mark.parametrize("path, status", [
    (lambda: exec_core()[0].recording_refused("disk full"), 255),
    (lambda: exec_core()[0].granted("no grant lets a open a exec channel on target t"), 126),
    (lambda: _deciding().decided("deny", "denied by rule r"), 126),     # no prefix given
    (lambda: _reviewing().approved(False, "not approved\nby\talice"), 125),
    (lambda: _deciding().error("cannot reach web1"), 255),
    (lambda: relaying().host_closed(None, None, "connection lost"), 255),
    (lambda: relaying().recording_failed("disk full"), 255),
    (lambda: relaying().fail(""), 255),
])
def test_every_bastion_made_status_comes_with_one_bastion_line(path, status):
    end = _ended(path())
    assert end.status == status
    text = end.message.decode()
    assert text.startswith("bastion: ") and text.endswith("\n") and text.count("\n") == 1, text


def _deciding():
    core, _ = exec_core("rm -rf /srv")
    core.granted(None)
    return core


def _reviewing():
    core = _deciding()
    core.decided("review")
    return core
